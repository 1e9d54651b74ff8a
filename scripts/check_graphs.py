"""GPU check of the engine's CUDA graphs (no pytest needed): eager vs captured/replayed pictures, bit for bit.

    python scripts/check_graphs.py [--size 256x320] [--batch 4]
Prints the graph counters and whether every replayed batch equals the eager engine's; exit 1 if not.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256x320")
    ap.add_argument("--batch", type=int, default=4)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    from mambast_cli.engine import Engine
    from mambast_cli.model import MambaST, MambaSTConfig

    H, W = (int(v) for v in a.size.split("x"))
    torch.manual_seed(0)
    m = MambaST(MambaSTConfig()).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(a.batch, 3, H, W, generator=g)
    styles = [torch.rand(3, 256, 256, generator=g) for _ in range(2)]
    os.environ["MAMBAST_CUDA_GRAPHS"] = "0"
    eager = Engine(model=m, device="cuda", disk_cache=False)
    ref = [eager.stylize(x, eager.encode_style(s)) for s in styles]
    os.environ["MAMBAST_CUDA_GRAPHS"] = "1"
    eng = Engine(model=m, device="cuda", disk_cache=False)
    eng.graph_max_pixels = max(eng.graph_max_pixels, H * W)    # allow the capture at this size (default limit: 1 MP)
    hs = [eng.encode_style(s) for s in styles]
    same = [torch.equal(eng.stylize(x, hs[i % 2]), ref[i % 2]) for i in range(5)]
    st = {k: v for k, v in eng.stats.items() if k.startswith("graph_")}
    print(f"graphs {a.batch}x{H}x{W}: {st}; replayed batches equal to eager: {same}")
    return 0 if all(same) and st.get("graph_replays", 0) >= 4 else 1


if __name__ == "__main__":
    sys.exit(main())
