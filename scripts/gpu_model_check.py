"""GPU check of the whole model (run through the device tool; random weights, speed and parity only).

1. Time one 512² stylisation (encode content + encode style + decode, batch 1, fp32) with the reference scan
   (MAMBAST_SCAN=ref semantics) and with the Triton scan, CUDA-event timed after warm-up.
2. Whole-model parity: output with the Triton kernels vs the reference scan (fp32), at 256² and 512×768.

Usage: python scripts/gpu_model_check.py [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from mambast_cli.model import MambaST
from mambast_kernels import cross_scan_triton


def timed(fn, reps=3):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import os

    torch.manual_seed(0)
    dev = "cuda"
    model = MambaST().to(dev).eval()
    res: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    try:
        import triton
        res["triton"] = triton.__version__
    except Exception:
        pass

    def run(c, s):
        with torch.inference_mode():
            cs = model.encode_content(c)
            ss = model.encode_style(s, grid=cs.grid, seed=0)
            return model.decode(cs, ss)

    c = torch.rand(1, 3, 512, 512, device=dev)
    s = torch.rand(1, 3, 512, 512, device=dev)
    for backend in ("ref", "triton"):
        if backend == "triton" and cross_scan_triton is None:
            res["triton_ms_512"] = "unavailable"
            continue
        os.environ["MAMBAST_SCAN"] = backend
        try:
            ms = timed(lambda: run(c, s), reps=3 if backend == "ref" else 10)
            res[f"{backend}_ms_512_fp32_b1"] = round(ms, 2)
        except Exception as e:  # keep going
            res[f"{backend}_ms_512_fp32_b1"] = f"error: {e}"
        print(backend, res[f"{backend}_ms_512_fp32_b1"], flush=True)

    for H, W in ((256, 256), (512, 768)):
        if cross_scan_triton is None:
            break
        c = torch.rand(1, 3, H, W, device=dev)
        s = torch.rand(1, 3, H, W, device=dev)
        os.environ["MAMBAST_SCAN"] = "ref"
        ref = run(c, s).double()
        os.environ["MAMBAST_SCAN"] = "triton"
        out = run(c, s).double()
        rel = ((out - ref).norm() / ref.norm()).item()
        res[f"whole_model_rel_err_{H}x{W}"] = rel
        print(f"whole model {H}x{W}: rel err triton vs ref = {rel:.2e}", flush=True)
    os.environ.pop("MAMBAST_SCAN", None)
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
