"""Seconds per picture of the CPU engine (bundled weights), optionally with another chunk size for the reference scan.

What a user without a GPU waits for, per picture, after one warm-up call. `--chunk` overrides the PyTorch reference
scan's chunk of steps (default: the library's, 16 // S), to compare settings on the same machine.

    python scripts/bench_cpu_engine.py [--sizes 256,512] [--batch 1] [--repeats 3] [--chunk N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=0, help="reference-scan chunk (0: the library's default)")
    a = ap.parse_args()
    import torch

    import mambast_kernels
    from mambast_cli.engine import Engine

    if a.chunk:
        ref = mambast_kernels.cross_scan_ref
        mambast_kernels.cross_scan_ref = lambda *args, **kw: ref(*args, **{**kw, "chunk": a.chunk})
    torch.manual_seed(0)
    eng = Engine(device="cpu", disk_cache=False)
    style = eng.encode_style(torch.rand(3, 256, 256))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, chunk {a.chunk or 'default'}")
    for size in (int(s) for s in a.sizes.split(",")):
        x = torch.rand(a.batch, 3, size, size)
        eng.stylize(x, style)
        ts = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            eng.stylize(x, style)
            ts.append((time.perf_counter() - t0) / a.batch)
        print(f"  {size}², batch {a.batch}: {', '.join(f'{t:.2f}' for t in ts)} s per picture")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
