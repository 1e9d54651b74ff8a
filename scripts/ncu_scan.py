"""Run the scan forward (`cross_scan_fwd_cl`) a few times at one shape and config, for Nsight Compute to profile.

Session 8 measured that removing the loop's shuffles, barriers and shared-memory round trips (the (N, BD) state
tile) did not make it faster (BENCHMARKS.md), so what bounds the forward's per-step cost is open. Nsight Compute's
warp-state statistics and per-instruction stall reasons say it; this script only provides the launches:

    ncu --clock-control none --section WarpStateStats --section SchedulerStats --section Occupancy \\
        --section LaunchStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \\
        --section SourceCounters -k "regex:_fwd3_kernel|_seq_fwd_kernel" --launch-skip 2 --launch-count 1 -o scan \\
        python3 scripts/ncu_scan.py --batch 64 --config 64,2,0,0,4

A config with 6th element 2 runs v3's kernel (`_fwd3_kernel`, session 9). (`scripts/device/lease_i.sh` PART=2 runs
both.) Without `ncu` it prints the time per call (CUDA events).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64, help="contents (S); G = 1")
    ap.add_argument("--side", type=int, default=64, help="token grid side (64: a 512² picture)")
    ap.add_argument("--config", default="64,2,0,0,4", help="the forward's config tuple, comma-separated")
    ap.add_argument("--calls", type=int, default=4)
    a = ap.parse_args()

    import torch

    from mambast_kernels import cross_scan_v2 as cs2
    from mambast_kernels.bench import make_inputs

    gen = torch.Generator(device="cuda").manual_seed(0)
    x = make_inputs(a.batch, 1, a.side, a.side, torch.bfloat16, gen)
    x = [x[0].transpose(1, 2).contiguous(), x[1].transpose(2, 3).contiguous()] + x[2:]   # channel-last, as the engine
    config = tuple(int(v) for v in a.config.split(","))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.no_grad():
        for i in range(a.calls):
            start.record()
            cs2.cross_scan_fwd_cl(*x, a.side, a.side, config=config)
            end.record()
            torch.cuda.synchronize()
            print(f"call {i}: {start.elapsed_time(end):.3f} ms", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
