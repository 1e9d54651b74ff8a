"""Where the engine's GPU time goes: torch.profiler over `Engine.stylize` batches, kernels grouped by stage.

    python scripts/profile_engine.py --sizes 512x512,1080x1920 --out $OUT/profile.json

For each size: one style, a full batch (Engine.max_batch, capped by --max-batch), warm-up, then --steps profiled
calls. Prints ms per image for each kernel group (scan forward, convolutions, reflection padding, upsampling,
matrix products, LayerNorm, copies/elementwise, other) and the top kernels, so a missed speed target can say what
bounds it (issue 5, issue 6). Needs CUDA.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict

import torch

GROUPS = [  # (group, regex on the kernel name), first match wins
    ("scan forward", r"_seq_fwd|_cross_scan_fwd|_fwd3_kernel"),
    ("convolution", r"conv|cudnn|implicit_gemm|xmma|sm90_xmma|fprop|wgrad|dgrad"),
    ("reflection pad", r"reflection_pad|_pad_relu_up"),     # PyTorch's, or the fused channels-last one
    ("upsample", r"upsample"),
    ("matmul", r"gemm|nvjet|cutlass|ampere|sm90"),
    ("layernorm", r"layer_norm"),
    ("host <-> device copies", r"Memcpy (HtoD|DtoH)"),   # float32 pictures here; the pipelines move uint8 (4x less)
    ("copy / elementwise", r"elementwise|copy|cat|transpose|permute|index|fill|Memcpy|memcpy|Memset|reduce"),
]


def group_of(name: str) -> str:
    for g, rx in GROUPS:
        if re.search(rx, name, re.IGNORECASE):
            return g
    return "other"


def profile_size(engine, h: int, w: int, steps: int, max_batch: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    B = max(1, min(engine.max_batch(h, w), max_batch))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, h, w, generator=g).pin_memory()
    handle = engine.encode_style(torch.rand(3, 256, 256, generator=g))
    for _ in range(2):
        engine.stylize(x, handle)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        engine.stylize(x, handle)
    end.record()
    torch.cuda.synchronize()
    wall_ms = start.elapsed_time(end) / (steps * B)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine.stylize(x, handle)
        torch.cuda.synchronize()
    per, kernels = kernel_times(prof.key_averages(), steps * B, steps)
    try:
        by_op = kernels_by_op(prof, steps * B, steps)
    except Exception as e:  # noqa: BLE001  attribution is a convenience: never lose the rest of the row for it
        by_op = [{"error": repr(e)[:200]}]
    return {"size": f"{h}x{w}", "batch": B, "wall_ms_per_img": round(wall_ms, 3), "by_op": by_op,
            "gpu_ms_per_img": round(sum(per.values()), 3),
            "groups_ms_per_img": {k: round(v, 3) for k, v in sorted(per.items(), key=lambda kv: -kv[1])},
            "top_kernels": [{"ms_per_img": round(a, 4), "name": b, "calls_per_batch": c} for a, b, c in kernels[:14]]}


def kernel_times(averages, images: int, steps: int) -> tuple[dict[str, float], list[tuple[float, str, int]]]:
    """GPU ms per image by kernel group, and (ms per image, kernel name, calls per step) per kernel, sorted. Only the
    device-side events count: an operator's entry (aten::copy_, aten::conv2d, …) carries the device time of the
    kernels below it, so counting those too counted every kernel once per level of its call stack (session 9 found
    it: 2.14 "GPU ms" per 512² picture against 1.85 of wall time, and 12 ms of "convolution" per 1080p frame)."""
    from torch.autograd import DeviceType

    per: dict[str, float] = defaultdict(float)
    kernels = []
    for ev in averages:
        if getattr(ev, "device_type", None) != DeviceType.CUDA:
            continue
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0.0)
        if t <= 0:
            continue
        ms_img = t / 1000 / images
        per[group_of(ev.key)] += ms_img
        kernels.append((ms_img, ev.key[:90], ev.count // steps))
    kernels.sort(reverse=True)
    return per, kernels


def kernels_by_op(prof, images: int, steps: int, top: int = 14) -> list[dict]:
    """GPU time per operator that launched it: each CPU op's own kernels (not its children's), labelled with its
    parent op, e.g. 'aten::add_ < aten::_convolution' (session 8 found the convolutions' separate bias passes this
    way round, from kernel names alone). Ops whose kernels are Triton's show under the Python op that called them."""
    per: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for ev in prof.events():
        ks = getattr(ev, "kernels", None)
        if not ks:
            continue
        us = sum(getattr(k, "duration", 0.0) for k in ks)
        parent = getattr(ev, "cpu_parent", None)
        label = ev.name + (f" < {parent.name}" if parent is not None else "")
        per[label][0] += us
        per[label][1] += len(ks)
    rows = sorted(per.items(), key=lambda kv: -kv[1][0])[:top]
    return [{"op": k[:120], "ms_per_img": round(v[0] / 1000 / images, 4), "kernels_per_batch": v[1] // steps}
            for k, v in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512x512,1080x1920")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--weights", default=None, help="default: the bundled weights")
    ap.add_argument("--random", action="store_true", help="random weights of the full model (speed only)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    from mambast_cli.engine import Engine

    if a.random:
        from mambast_cli.model import MambaST, MambaSTConfig

        torch.manual_seed(0)
        engine = Engine(model=MambaST(MambaSTConfig()).eval(), device="cuda", disk_cache=False)
    else:
        engine = Engine(weights=a.weights, device="cuda")
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "engine": engine.info(), "rows": []}
    for s in a.sizes.split(","):
        h, w = (int(v) for v in s.lower().split("x"))
        r = profile_size(engine, h, w, a.steps, a.max_batch)
        res["rows"].append(r)
        print(f"\n{r['size']} batch {r['batch']}: wall {r['wall_ms_per_img']} ms/img, GPU kernels {r['gpu_ms_per_img']} ms/img")
        for k, v in r["groups_ms_per_img"].items():
            print(f"  {k:20s} {v:8.3f} ms/img  {100 * v / max(r['gpu_ms_per_img'], 1e-9):5.1f} %")
        for kk in r["top_kernels"][:8]:
            print(f"    {kk['ms_per_img']:8.4f}  x{kk['calls_per_batch']:<3d} {kk['name']}")
        print("  by launching op:")
        for o in r["by_op"][:10]:
            print(f"    {o.get('ms_per_img', 0):8.4f}  x{o.get('kernels_per_batch', 0):<3d} {o.get('op', o.get('error'))}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
