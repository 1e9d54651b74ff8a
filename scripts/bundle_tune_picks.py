"""Turn a scan-tuner cache measured on a GPU into a bundled pick file (kernels/tuned/*.json, see its README).

Keeps only the keys measured on the named GPU and of the kernel versions this checkout has (keys of older kernel
versions would never be looked up again), and refuses configs the candidate lists no longer contain.

    python scripts/bundle_tune_picks.py CACHE.json --gpu "NVIDIA H100 80GB HBM3" -o kernels/tuned/h100.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache")
    ap.add_argument("--gpu", required=True, help="the device name in the keys, e.g. 'NVIDIA H100 80GB HBM3'")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    import importlib

    v2 = importlib.import_module("mambast_kernels.cross_scan_v2")

    known = v2.known_tune_configs()
    picks = json.loads(Path(a.cache).read_text())
    kept, dropped = {}, []
    for k, v in sorted(picks.items()):
        tag = k.split("|", 1)[0]
        if not k.endswith("|" + a.gpu) or tag not in known:
            dropped.append(k)
            continue
        if tuple(v) not in {tuple(c) for c in known[tag]}:
            dropped.append(k)
            continue
        kept[k] = v
    Path(a.out).write_text(json.dumps(kept, indent=0, sort_keys=True) + "\n")
    print(f"{len(kept)} picks written to {a.out}; {len(dropped)} left out (other GPUs, old kernel versions, "
          f"configs no longer offered)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
