"""Copy streams (`MAMBAST_COPY_STREAMS=1`) on a GPU: same output bytes, and the time both ways.

Stylises one folder of synthetic 512² JPEGs end to end (`pipeline.bench.folder_benchmark`, random weights seeded 0,
GPU decoding as configured) with uploads and downloads on the model's stream and then on copy streams of their own,
compares every output file byte for byte, and prints both rates. Run through the device tool (a GPU is needed):

    python3 scripts/check_copy_streams.py --images 1000 [--size 512]

Exit code 1 when an output differs or a picture failed.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", default=None, help="a JSON file for the two rows")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the tiny model config (a smoke test of this script)")
    a = ap.parse_args()
    import torch

    from mambast_cli.engine import Engine
    from mambast_cli.model.mambast import MambaST, MambaSTConfig, tiny_config
    from mambast_cli.model.weights import save_weights
    from mambast_cli.pipeline.bench import folder_benchmark, make_images

    work = Path(tempfile.mkdtemp(prefix="mambast-copy-streams-"))
    torch.manual_seed(0)
    save_weights(work / "random.safetensors", MambaST(tiny_config() if a.tiny else MambaSTConfig()).eval(), source="random init (check)")
    engine = Engine(weights=work / "random.safetensors", device=a.device, disk_cache=False, cache_dir=work / "cache")
    make_images(work / "in", a.images, a.size)
    make_images(work / "style", 1, a.size, seed=10_000)
    rows = {}
    for mode in ("0", "1"):
        os.environ["MAMBAST_COPY_STREAMS"] = mode
        rows[mode] = folder_benchmark(engine, images=work / "in", size=a.size, style=work / "style" / "img00000.jpg",
                                      workdir=work / f"run{mode}")
        print(f"MAMBAST_COPY_STREAMS={mode}: {rows[mode]['wall_img_s']} img/s wall, {rows[mode]['steady_img_s']} "
              f"steady, {rows[mode]['ok']} ok, {rows[mode]['failed']} failed", flush=True)
    outs = [sorted(p.relative_to(work / f"run{m}" / "out") for p in (work / f"run{m}" / "out").rglob("*") if p.is_file())
            for m in ("0", "1")]
    same = outs[0] == outs[1] and all(filecmp.cmp(work / "run0" / "out" / p, work / "run1" / "out" / p, shallow=False)
                                      for p in outs[0])
    print(f"{len(outs[0])} outputs; byte-identical: {same}")
    if a.out:
        Path(a.out).write_text(json.dumps({"rows": rows, "identical": same, "outputs": len(outs[0])}, indent=1))
    return 0 if same and rows["0"]["failed"] == 0 and rows["1"]["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
