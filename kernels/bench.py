"""Benchmark of the Triton cross-scan (run through the device tool).

    python kernels/bench.py --out $OUT/bench.json

Floors (METHOD.md), worked out before measuring. One "element" = (recurrence s, direction k, channel d, state n,
step t); count E = S*K*Di*N*L elements (K=4, Di=1024, N=16).

  Work per element (forward): 1 exp2 (MUFU) + mul dt*A + mul dt*u*B + 1 FMA state update + G FMA readouts.
    Ops counted below = E * (1 exp + 3 + G FMA/mul). H100 SXM: MUFU ex2 16/clk/SM x 132 SM x ~1.75 GHz ~ 3.7e12/s,
    fp32 FMA 128/clk/SM ~ 3.0e13/s, issue 4 warp-instr/clk/SM ~ 9.3e11 warp-instr/s.
    Encoder 512^2, B=8: E = 8*4*1024*16*4096 = 2.15e9 -> MUFU 0.58 ms, FMA (4/elt) 0.29 ms, issue at the bare
    minimum of ~7 instr/elt 0.51 ms. => the floor is ~0.5-0.6 ms, set by the exp unit and instruction issue.
  Bytes (minimum: every input read once, output written once, in the input dtype es; output fp32):
    u S*Di*L*es + delta S*K*Di*L*es + B S*K*N*L*es + C S*G*K*N*L*es + y S*G*Di*L*4  (A, D, bias negligible)
    512^2, B=8, bf16: 67 + 268 + 4 + 4 + 134 MB = 478 MB -> 0.16 ms at ~3 TB/s; fp32 inputs: 822 MB -> 0.27 ms.
  => compute/issue-bound by ~3x over memory. The deterministic merge (4 fp32 slots + one sum) adds 4 writes + 4 reads
    + 1 write of the output: +671 MB at B=8 512^2 (~0.22 ms), a cost paid for bitwise-reproducible output.
  Backward per element: 2 exp2 (state recompute + the shifted a_{t+1}), ~12 FMA, 2 reductions over channels
    (dB, dC) and 2 over states (du, ddelta): ~2.5x the forward's work is the realistic target.
  Anchor (official mamba_ssm CUDA kernel, perf-anchors.md): 0.31 ms B=1 L=4096, 2.20 ms B=8 L=4096 (bf16), plus the
    4-way direction copies and the merge that this kernel makes unnecessary (timed here as "copies").

Each row prints ms (median of triton.testing.do_bench), the minimum bytes -> GB/s, and ops -> Gop/s. A row that fails
prints its error and the script continues. The table comes last; --out writes everything as JSON.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import traceback

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
try:
    import mambast_kernels  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    import importlib.util
    _d = os.path.dirname(os.path.abspath(__file__))
    _spec = importlib.util.spec_from_file_location("mambast_kernels", os.path.join(_d, "__init__.py"),
                                                   submodule_search_locations=[_d])
    mambast_kernels = importlib.util.module_from_spec(_spec)
    sys.modules["mambast_kernels"] = mambast_kernels
    _spec.loader.exec_module(mambast_kernels)
import importlib
import inspect

cs = importlib.import_module("mambast_kernels.cross_scan")
cs2 = importlib.import_module("mambast_kernels.cross_scan_v2")
cs3 = importlib.import_module("mambast_kernels.cross_scan_v3")

K, DI, N = 4, 1024, 16
DEV = "cuda"
ANCHOR_MS = {  # official selective scan alone (perf-anchors.md), keyed (B, L, input dtype)
    (1, 1024, "bfloat16"): 0.087, (1, 4096, "bfloat16"): 0.31, (1, 16384, "bfloat16"): 1.43, (8, 4096, "bfloat16"): 2.20,
    (1, 1024, "float32"): 0.17, (1, 4096, "float32"): 0.61, (1, 16384, "float32"): 2.44, (8, 4096, "float32"): 4.37,
}


def make_inputs(S, G, h, w, dtype, gen):
    L = h * w
    r = lambda *s: torch.randn(*s, generator=gen, device=DEV)  # noqa: E731
    u = r(S, DI, L).to(dtype)
    delta = (r(S, K, DI, L) * 0.5 - 3.0).to(dtype)
    A = -(torch.arange(1, N + 1, device=DEV, dtype=torch.float32)[None, :] * torch.exp(r(K * DI, N) * 0.1))
    B = r(S, K, N, L).to(dtype)
    C = r(S, G, K, N, L).to(dtype)
    D = r(K * DI)
    bias = r(K * DI) * 0.5
    return [u, delta, A, B, C, D, bias]


def fwd_bytes(S, G, L, es):
    return S * DI * L * es + S * K * DI * L * es + S * K * N * L * es + S * G * K * N * L * es + S * G * DI * L * 4


def fwd_ops(S, G, L):
    return S * K * DI * N * L * (1 + 3 + G)


def bench(fn, ms_hint=1.0):
    rep = 200 if ms_hint < 5 else 600
    return triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median")


def rotating(sets):
    """Cycle over several input sets so that small problems are not timed out of L2."""
    it = itertools.cycle(sets)
    return lambda: next(it)


def n_sets(S, G, L, es):
    return 3 if fwd_bytes(S, G, L, es) < 300e6 else 1


def official_copies(u, out_slots, h, w):
    """What the official SS2D does around its scan: build the 4 direction copies of u, and merge 4 outputs back."""
    S, Di, L = u.shape
    x = u.view(S, Di, h, w)
    xs = torch.stack([x.reshape(S, Di, L), x.transpose(2, 3).contiguous().view(S, Di, L)], dim=1)
    xs = torch.cat([xs, torch.flip(xs, dims=[-1])], dim=1).contiguous()            # (S, 4, Di, L)
    o = out_slots
    inv = torch.flip(o[:, 2:4], dims=[-1])
    wh = o[:, 1].view(S, Di, w, h).transpose(2, 3).contiguous().view(S, Di, L)
    invwh = inv[:, 1].view(S, Di, w, h).transpose(2, 3).contiguous().view(S, Di, L)
    return xs, o[:, 0] + inv[:, 0] + wh + invwh


def row_fwd(name, S, G, h, w, dtype, gen, config=None, kernel_only=False, copies=False):
    L = h * w
    es = torch.empty((), dtype=dtype).element_size()
    sets = [make_inputs(S, G, h, w, dtype, gen) for _ in range(n_sets(S, G, L, es))]
    nxt = rotating(sets)
    cfg = cs.cross_scan_fwd(*sets[0], h, w, config=config)[2]   # compiles / tunes outside the timing
    if kernel_only:
        fn = lambda: cs._launch_fwd(*nxt(), h, w, cfg, False)  # noqa: E731
    else:
        fn = lambda: cs.cross_scan_fwd(*nxt(), h, w, config=cfg)  # noqa: E731
    ms = bench(fn)
    nbytes, ops = fwd_bytes(S, G, L, es), fwd_ops(S, G, L)
    r = dict(name=name, S=S, G=G, h=h, w=w, L=L, dtype=str(dtype).replace("torch.", ""), config=list(cfg), ms=ms,
             bytes=nbytes, GBps=nbytes / ms / 1e6, ops=ops, Gops=ops / ms / 1e6)
    if copies:
        u = sets[0][0]
        slots = torch.randn(S, K, DI, L, device=DEV)
        ms_c = bench(lambda: official_copies(u, slots, h, w))
        anchor = ANCHOR_MS.get((S, L, r["dtype"]))
        r.update(copies_ms=ms_c, anchor_scan_ms=anchor,
                 anchor_total_ms=(anchor + ms_c) if anchor else None)
    return r


def row_merge(name, S, G, h, w):
    L = h * w
    slots = torch.randn(S, G, K, DI, L, device=DEV)
    ms = bench(lambda: slots.sum(dim=2))
    nbytes = slots.numel() * 4 + S * G * DI * L * 4
    return dict(name=name, S=S, G=G, h=h, w=w, L=L, dtype="float32", ms=ms, bytes=nbytes, GBps=nbytes / ms / 1e6)


def row_train(name, S, h, w, dtype, gen, config=None, bwd_config=None):
    """Training forward (saves checkpoints) and backward, timed separately and together."""
    G, L = 1, h * w
    es = torch.empty((), dtype=dtype).element_size()
    xs = make_inputs(S, G, h, w, dtype, gen)
    y, hck, cfg = cs.cross_scan_fwd(*xs, h, w, save_states=True, config=config)
    dy = torch.randn_like(y)
    cs.cross_scan_bwd(*xs, dy, hck, h, w, cfg[1], bwd_config)  # compile / tune
    ms_f = bench(lambda: cs.cross_scan_fwd(*xs, h, w, save_states=True, config=cfg))
    ms_b = bench(lambda: cs.cross_scan_bwd(*xs, dy, hck, h, w, cfg[1], bwd_config))
    ms_inf = bench(lambda: cs.cross_scan_fwd(*xs, h, w, save_states=False, config=None))
    xt = [x.clone().requires_grad_() for x in xs]

    def fb():
        yy = cs.cross_scan_triton(*xt, h, w, config=cfg, bwd_config=bwd_config)
        torch.autograd.grad(yy, xt, dy)
    ms_fb = bench(fb)
    # backward minimum bytes: inputs again + dy + all grads once + the checkpoints (written by fwd, read here)
    nbytes = fwd_bytes(S, G, L, es) * 2 + hck.numel() * 4
    ops = S * K * DI * N * L * 16
    bcfg = bwd_config
    if bcfg is None and DEV == "cuda":
        bcfg = cs._TUNE_CACHE.get(f"bwd|S{S}|Di{DI}|L{L}|G{G}|N{N}|BT{cfg[1]}|{dtype}|{dtype}|"
                                  f"{torch.cuda.get_device_name()}")
    return dict(name=name, S=S, G=G, h=h, w=w, L=L, dtype=str(dtype).replace("torch.", ""), config=list(cfg),
                bwd_config=bcfg, ms=ms_b, fwd_train_ms=ms_f, fwd_infer_ms=ms_inf, fwd_bwd_autograd_ms=ms_fb,
                bwd_over_fwd=ms_b / ms_inf, bytes=nbytes, GBps=nbytes / ms_b / 1e6, ops=ops, Gops=ops / ms_b / 1e6)


def row_fwd_v2(name, S, G, h, w, dtype, gen, layout="cl", config=None, v3_off=False):
    """v2 forward. layout='cl': channel-last inputs, kernel + slot sum only; 'cf': includes the wrapper's transposes.
    v3_off: with MAMBAST_SCAN3=0 (B and C stay in their dtype, as before v3)."""
    if v3_off:
        old = os.environ.get("MAMBAST_SCAN3")
        os.environ["MAMBAST_SCAN3"] = "0"
        try:
            return row_fwd_v2(name, S, G, h, w, dtype, gen, layout, config)
        finally:
            if old is None:
                del os.environ["MAMBAST_SCAN3"]
            else:
                os.environ["MAMBAST_SCAN3"] = old
    L = h * w
    es = torch.empty((), dtype=dtype).element_size()
    sets = [make_inputs(S, G, h, w, dtype, gen) for _ in range(n_sets(S, G, L, es))]
    if layout == "cl":
        sets = [[x[0].transpose(1, 2).contiguous(), x[1].transpose(2, 3).contiguous()] + x[2:] for x in sets]
    nxt = rotating(sets)
    if layout == "cl":
        cfg = cs2.cross_scan_fwd_cl(*sets[0], h, w, config=config)[2]
        fn = lambda: cs2.cross_scan_fwd_cl(*nxt(), h, w, config=cfg)  # noqa: E731
    else:
        with torch.no_grad():
            cs2.cross_scan_triton_v2(*sets[0], h, w, layout="cf", config=config)
        cfg = config
        fn = lambda: cs2.cross_scan_triton_v2(*nxt(), h, w, layout="cf", config=config)  # noqa: E731
    with torch.no_grad():
        ms = bench(fn)
    nbytes, ops = fwd_bytes(S, G, L, es), fwd_ops(S, G, L)
    return dict(name=name, S=S, G=G, h=h, w=w, L=L, dtype=str(dtype).replace("torch.", ""),
                config=list(cfg) if cfg else None, ms=ms, bytes=nbytes, GBps=nbytes / ms / 1e6, ops=ops,
                Gops=ops / ms / 1e6, anchor_scan_ms=ANCHOR_MS.get((S, L, str(dtype).replace("torch.", ""))))


def row_train_v2(name, S, h, w, dtype, gen, bwd_config=None, bwd="v1"):
    """v2 training: channel-last fwd with checkpoints, bwd, and autograd fwd+bwd (layout='cl'). bwd='v1': v1's chunked
    backward, bwd_config = (BD, NL, warps); bwd='v3': the sequential one (cross_scan_bwd_seq3_cl), (BD, warps[, maxnreg])."""
    old_bwd = os.environ.get("MAMBAST_SCAN_BWD")
    os.environ["MAMBAST_SCAN_BWD"] = bwd
    try:
        return _row_train_v2(name, S, h, w, dtype, gen, bwd_config, bwd)
    finally:
        if old_bwd is None:
            os.environ.pop("MAMBAST_SCAN_BWD", None)
        else:
            os.environ["MAMBAST_SCAN_BWD"] = old_bwd


def _row_train_v2(name, S, h, w, dtype, gen, bwd_config, bwd):
    G, L = 1, h * w
    es = torch.empty((), dtype=dtype).element_size()
    xs = make_inputs(S, G, h, w, dtype, gen)
    xs = [xs[0].transpose(1, 2).contiguous(), xs[1].transpose(2, 3).contiguous()] + xs[2:]
    y, hck, cfg = cs2.cross_scan_fwd_cl(*xs, h, w, save_states=True)
    dy = torch.randn_like(y)
    bwd_fn = {"v1": cs2.cross_scan_bwd_cl, "v3": cs2.cross_scan_bwd_seq3_cl}[bwd]
    bwd_fn(*xs, dy, hck, h, w, cs2.TRAIN_BT, bwd_config)
    ms_f = bench(lambda: cs2.cross_scan_fwd_cl(*xs, h, w, save_states=True, config=cfg))
    ms_b = bench(lambda: bwd_fn(*xs, dy, hck, h, w, cs2.TRAIN_BT, bwd_config))
    ms_inf = bench(lambda: cs2.cross_scan_fwd_cl(*xs, h, w, save_states=False))
    xt = [x.clone().requires_grad_() for x in xs]

    def fb():
        yy = cs2.cross_scan_triton_v2(*xt, h, w, layout="cl", bwd_config=bwd_config)
        torch.autograd.grad(yy, xt, dy)
    ms_fb = bench(fb)
    nbytes = fwd_bytes(S, G, L, es) * 2 + hck.numel() * 4
    ops = S * K * DI * N * L * 16
    if bwd_config is None and bwd == "v3" and DEV == "cuda":
        bwd_config = cs._TUNE_CACHE.get(
            f"{bwd}seqbwd|S{S}|Di{DI}|L{L}|G{G}|N{N}|BT{cs2.TRAIN_BT}|{dtype}|{dtype}|{torch.cuda.get_device_name()}")
    return dict(name=name, S=S, G=G, h=h, w=w, L=L, dtype=str(dtype).replace("torch.", ""), config=list(cfg),
                bwd=bwd, bwd_config=bwd_config, ms=ms_b, fwd_train_ms=ms_f, fwd_infer_ms=ms_inf, fwd_bwd_autograd_ms=ms_fb,
                bwd_over_fwd=ms_b / ms_inf, bytes=nbytes, GBps=nbytes / ms_b / 1e6, ops=ops, Gops=ops / ms_b / 1e6)


def row_merge_norm(name, S, G, h, w):
    """The SS2D epilogue: 4 direction slots -> sum -> LayerNorm -> * silu(z) -> bf16, fused (merge_norm.py) vs the
    PyTorch ops the model runs without it. Bytes: the fused pass's minimum (4 fp32 slots + bf16 z in, bf16 out)."""
    mn = importlib.import_module("mambast_kernels.merge_norm")
    L = h * w
    slots = torch.randn(S, G, 4, L, DI, device=DEV)
    z = torch.randn(S * G, L, 2 * DI, device=DEV, dtype=torch.bfloat16)[..., DI:]
    wt, bs = torch.randn(DI, device=DEV), torch.randn(DI, device=DEV)
    fused = lambda: mn.merge_norm_gate(slots, z, wt, bs, 1e-5)  # noqa: E731

    def torch_ops():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = torch.nn.functional.layer_norm(slots.sum(dim=2).reshape(S * G, L, DI), (DI,), wt, bs, 1e-5)
            return (y * torch.nn.functional.silu(z)).to(torch.bfloat16)
    ref = torch_ops().float()
    err = ((fused().float() - ref).norm() / ref.norm()).item()
    ms_f, ms_t = bench(fused), bench(torch_ops)
    nbytes = S * G * L * DI * (16 + 2 + 2)
    return dict(name=name, S=S, G=G, h=h, w=w, L=L, ms=ms_f, torch_ms=ms_t, speedup=ms_t / ms_f, rel_err=err,
                bytes=nbytes, GBps=nbytes / ms_f / 1e6)


def row_residual_norm(name, B, h, w, C=512):
    """A VSS block's LayerNorms: LN_1 -> bf16 and LN(skip * x + y) + x, fused (residual_norm.py) vs the PyTorch ops the
    model runs under autocast without them. Bytes: the fused passes' minimum (x fp32 in + bf16 out; x fp32 + y bf16 in,
    fp32 out)."""
    rn = importlib.import_module("mambast_kernels.residual_norm")
    x = torch.randn(B, h, w, C, device=DEV)
    y = torch.randn(B, h, w, C, device=DEV, dtype=torch.bfloat16)
    skip, wt, bs = torch.randn(C, device=DEV), torch.randn(C, device=DEV), torch.randn(C, device=DEV)

    def fused():
        return rn.norm_cast(x, wt, bs, 1e-5, torch.bfloat16), rn.add_norm_residual(x, y, skip, wt, bs, 1e-5)

    def torch_ops():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            a = torch.nn.functional.layer_norm(x, (C,), wt, bs, 1e-5).to(torch.bfloat16)   # the cast in_proj does
            return a, torch.nn.functional.layer_norm(skip * x + y, (C,), wt, bs, 1e-5) + x
    fa, fr = fused()
    ta, tr = torch_ops()
    err = max(((fa.float() - ta.float()).norm() / ta.float().norm()).item(), ((fr - tr).norm() / tr.norm()).item())
    ms_f, ms_t = bench(fused), bench(torch_ops)
    nbytes = B * h * w * C * ((4 + 2) + (4 + 2 + 4))
    return dict(name=name, S=B, G=1, h=h, w=w, L=h * w, ms=ms_f, torch_ms=ms_t, speedup=ms_t / ms_f, rel_err=err,
                bytes=nbytes, GBps=nbytes / ms_f / 1e6)


def row_dwconv_silu(name, B, h, w):
    """SS2D's depthwise 3×3 conv + SiLU on one half of in_proj's output (bf16, strided), fused (dwconv_silu.py) vs the
    model's PyTorch ops (channels_last copy, cuDNN depthwise conv, SiLU) under autocast. Bytes: the fused pass's
    minimum (bf16 in once, bf16 out)."""
    dc = importlib.import_module("mambast_kernels.dwconv_silu")
    xx = torch.randn(B, h, w, 2 * DI, device=DEV, dtype=torch.bfloat16)
    x = xx[..., :DI]
    conv = torch.nn.Conv2d(DI, DI, 3, padding=1, groups=DI, device=DEV).requires_grad_(False)
    fused = lambda: dc.dwconv_silu(x, conv.weight, conv.bias)  # noqa: E731

    def torch_ops():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            xc = x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
            return torch.nn.functional.silu(conv(xc)).permute(0, 2, 3, 1).reshape(B, h * w, DI)
    ref = torch_ops().float()
    err = ((fused().float() - ref).norm() / ref.norm()).item()
    ms_f, ms_t = bench(fused), bench(torch_ops)
    nbytes = B * h * w * DI * (2 + 2)
    return dict(name=name, S=B, G=1, h=h, w=w, L=h * w, ms=ms_f, torch_ms=ms_t, speedup=ms_t / ms_f, rel_err=err,
                bytes=nbytes, GBps=nbytes / ms_f / 1e6)


def row_pad(name, B, C, h, w, scale, relu=True):
    """CNN-decoder glue at one layer: ReLU + nearest ×scale + reflect pad 1, channels-last bf16 (pad_nhwc.py) vs the
    PyTorch ops of the NCHW module (in-place ReLU, Upsample, ReflectionPad2d). Bytes: the fused pass's minimum."""
    pn = importlib.import_module("mambast_kernels.pad_nhwc")
    x = torch.randn(B, h, w, C, device=DEV, dtype=torch.bfloat16).permute(0, 3, 1, 2)     # channels-last view
    xc = x.contiguous()
    fused = lambda: pn.pad_relu_up(x, relu=relu, scale=scale)  # noqa: E731

    def torch_ops():
        y = torch.relu(xc) if relu else xc
        if scale != 1:
            y = torch.nn.functional.interpolate(y, scale_factor=scale, mode="nearest")
        return torch.nn.functional.pad(y, (1, 1, 1, 1), mode="reflect")
    exact = bool(torch.equal(fused(), torch_ops()))
    ms_f, ms_t = bench(fused), bench(torch_ops)
    out = B * C * (h * scale + 2) * (w * scale + 2)
    nbytes = 2 * (B * C * h * w + out)
    return dict(name=name, B=B, C=C, h=h, w=w, ms=ms_f, torch_ms=ms_t, speedup=ms_t / ms_f, exact=exact,
                bytes=nbytes, GBps=nbytes / ms_f / 1e6)


def row_copy_ceiling():
    x = torch.empty(256 * 1024 * 1024, device=DEV, dtype=torch.float32)
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    nbytes = 2 * x.numel() * 4
    return dict(name="ceiling: d2d copy 1 GiB", ms=ms, bytes=nbytes, GBps=nbytes / ms / 1e6)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-sweep", action="store_true", help="skip the per-config sweeps")
    ap.add_argument("--v1-all", action="store_true", help="all v1 rows and sweeps (default: v1 on the key rows only)")
    ap.add_argument("--only", default=None, help="regex: run only the rows whose name matches (the ceiling row always runs)")
    args = ap.parse_args()
    gen = torch.Generator(device=DEV)
    gen.manual_seed(1234)
    bf16, f32 = torch.bfloat16, torch.float32
    print(f"device {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}")

    v2 = [
        # training shapes (Ics/Icc/Iss fused: S=24 at 256^2), bf16 inputs, fp32 state
        ("v2 train 256 S24 bf16", row_train_v2, dict(S=24, h=32, w=32, dtype=bf16)),
        ("v2 train 256 S8 fp32", row_train_v2, dict(S=8, h=32, w=32, dtype=f32)),
        ("v2 enc 512 B8 bf16 cl", row_fwd_v2, dict(S=8, G=1, h=64, w=64, dtype=bf16)),
        ("v2 enc 512 B8 bf16 cf", row_fwd_v2, dict(S=8, G=1, h=64, w=64, dtype=bf16, layout="cf")),
        ("v2 enc 512 B1 bf16 cl", row_fwd_v2, dict(S=1, G=1, h=64, w=64, dtype=bf16)),
        ("v2 dec 512 G8 bf16 cl", row_fwd_v2, dict(S=1, G=8, h=64, w=64, dtype=bf16)),
        ("v2 dec 256 G64 bf16 cl", row_fwd_v2, dict(S=1, G=64, h=32, w=32, dtype=bf16)),
        ("v2 enc 256 B64 bf16 cl", row_fwd_v2, dict(S=64, G=1, h=32, w=32, dtype=bf16)),
        ("v2 L 256 B1 bf16 cl", row_fwd_v2, dict(S=1, G=1, h=32, w=32, dtype=bf16)),
        ("v2 L 1024 B1 bf16 cl", row_fwd_v2, dict(S=1, G=1, h=128, w=128, dtype=bf16)),
        ("v2 L 2048 B1 bf16 cl", row_fwd_v2, dict(S=1, G=1, h=256, w=256, dtype=bf16)),
        ("v2 enc 4K B1 bf16 cl", row_fwd_v2, dict(S=1, G=1, h=270, w=480, dtype=bf16)),
        ("v2 enc 1080p B8 bf16 cl", row_fwd_v2, dict(S=8, G=1, h=135, w=240, dtype=bf16)),
        ("v2 dec 1080p G8 bf16 cl", row_fwd_v2, dict(S=1, G=8, h=135, w=240, dtype=bf16)),
    ]
    v2 += [(f"v2 sweep fwd {c}", row_fwd_v2, dict(S=24, G=1, h=32, w=32, dtype=bf16, config=c))
           for c in cs2.FWD_CONFIGS]
    v2 += [(f"v2 sweep dec512 G8 fwd {c}", row_fwd_v2, dict(S=1, G=8, h=64, w=64, dtype=bf16, config=c))
           for c in cs2.FWD_CONFIGS[:2] + cs2.FWD_G_CONFIGS]
    v2 += [(f"v2 sweep seg 1080p B8 fwd {c}", row_fwd_v2, dict(S=8, G=1, h=135, w=240, dtype=bf16, config=c))
           for c in cs2.FWD_CONFIGS[:1] + cs2.FWD_CONFIGS[3:4] + [c for c in cs2.FWD_SEG_CONFIGS if not c[2]]]
    v2 += [(f"v2 sweep enc512 fwd {c}", row_fwd_v2, dict(S=8, G=1, h=64, w=64, dtype=bf16, config=c))
           for c in cs2.FWD_CONFIGS + cs2.FWD_PF_CONFIGS]
    # prefetch depth 4 against 1 (session 5): the encoder, one 512² content, training shape, decoder form, 1080p
    v2 += [(f"v2 pf enc512 B1 fwd {c}", row_fwd_v2, dict(S=1, G=1, h=64, w=64, dtype=bf16, config=c))
           for c in [(64, 4), (64, 2, 0, 16), (64, 4, 0, 0, 4), (64, 2, 0, 16, 4)]]
    v2 += [(f"v2 pf train256 fwd {c}", row_fwd_v2, dict(S=24, G=1, h=32, w=32, dtype=bf16, config=c))
           for c in [(64, 4), (64, 4, 0, 0, 4), (64, 2, 0, 0, 4)]]
    v2 += [(f"v2 pf 1080p B8 fwd {c}", row_fwd_v2, dict(S=8, G=1, h=135, w=240, dtype=bf16, config=c))
           for c in [(64, 4), (64, 4, 0, 0, 4), (128, 4, 0, 0, 4)]]
    # the (N, BD) state tile (TN = 1, session 7) against the best (BD, N) configs: encoder B8 (issue 3's target row)
    # and B64 (the engine's batch), the decoder form with 8 and 64 readouts, 1080p frames
    for name, shape, cands in [
            ("enc512 B8", dict(S=8, G=1, h=64, w=64), [(64, 2, 0, 0, 4), (128, 4, 0, 0, 4)]),
            ("enc512 B64", dict(S=64, G=1, h=64, w=64), [(64, 2, 0, 0, 4), (128, 4, 0, 0, 4)]),
            ("dec512 G8", dict(S=1, G=8, h=64, w=64), [(64, 2, 8, 0, 4), (64, 4, 4, 0, 4)]),
            ("dec512 G64", dict(S=1, G=64, h=64, w=64), [(64, 2, 2), (64, 2, 8, 0, 4)]),
            ("1080p B8", dict(S=8, G=1, h=135, w=240), [(128, 4, 0, 0, 4), (64, 2, 0, 0, 4)])]:
        tn = [c for c in cs2.FWD_TN_CONFIGS + (cs2.FWD_TN_G_CONFIGS if shape["G"] > 1 else [])]
        v2 += [(f"v2 tn {name} fwd {c}", row_fwd_v2, dict(**shape, dtype=bf16, config=c))
               for c in cands + list(dict.fromkeys(tn))]
    # v3's forward (session 9: counters for positions, B / C as fp32 int64 words, branch-free 4-step groups) against
    # v2's session-8 picks at the same shapes, those with B / C in bf16 as before (MAMBAST_SCAN3=0 during the row)
    for name, shape, cands in [
            ("enc512 B8", dict(S=8, G=1, h=64, w=64), [(64, 2, 0, 0, 4), (128, 4, 0, 0, 4)]),
            ("enc512 B64", dict(S=64, G=1, h=64, w=64), [(64, 2, 0, 0, 4), (128, 4, 0, 0, 4)]),
            ("enc256 B64", dict(S=64, G=1, h=32, w=32), [(64, 2, 0, 0, 4), (64, 4, 0, 0, 4)]),
            ("dec512 G64", dict(S=1, G=64, h=64, w=64), [(64, 2, 2), (64, 2, 8, 0, 4)]),
            ("dec512 G8", dict(S=1, G=8, h=64, w=64), [(64, 2, 8, 0, 4), (64, 4, 4, 0, 4)]),
            ("1080p B8", dict(S=8, G=1, h=135, w=240), [(128, 4, 0, 0, 4), (64, 2, 0, 0, 4)]),
            ("1080p B1", dict(S=1, G=1, h=135, w=240), [(64, 2, 0, 16, 4), (64, 2, 0, 16)])]:
        v3c = cs3.FWD3_CONFIGS + (cs3.FWD3_G_CONFIGS if shape["G"] > 1 else [])
        v3c += [c for c in cs3.FWD3_SEG_CONFIGS if not c[2]] if shape["h"] * shape["w"] >= 16384 else []
        v2 += [(f"v3 {name} v2 {c}", row_fwd_v2, dict(**shape, dtype=bf16, config=c, v3_off=True)) for c in cands]
        v2 += [(f"v3 {name} fwd {c}", row_fwd_v2, dict(**shape, dtype=bf16, config=c))
               for c in v3c if c[2] or shape["G"] <= cs3.GB_MAX]
        # session 10's next question: two or four lanes per channel (BD 16 / 8 with one warp: Triton then splits the
        # states over lanes, 128 / 96 registers without spills, 112 / 95 instructions a step, one / two shuffles
        # per readout), so twice / four times the warps fit an SM where 255 registers held 8
        v2 += [(f"v3 {name} lanes {c}", row_fwd_v2, dict(**shape, dtype=bf16, config=c))
               for c in ([(16, 1, 0, 0, 4, 2), (16, 1, 0, 0, 4, 2, 128), (8, 1, 0, 0, 4, 2)] if shape["G"] == 1
                         else [(16, 1, 1, 0, 4, 2), (16, 1, 1, 0, 4, 2, 128)])]
        # the experiment of session 9: half the exponentials on the FMA pipe (faster only if the MUFU pipe bounds)
        v2 += [(f"v3 {name} emu {c}", row_fwd_v2, dict(**shape, dtype=bf16, config=c))
               for c in ([(64, 2, 0, 0, 4, 2, 0, 1), (32, 1, 0, 0, 4, 2, 0, 1)] if shape["G"] == 1
                         else [(32, 1, 1, 0, 4, 2, 200, 1)])
               + ([(32, 1, 0, 16, 4, 2, 200, 1)] if shape["S"] == 1 and shape["G"] == 1 else [])]
    v2 += [(f"v2 sweep bwd {c}", row_train_v2, dict(S=24, h=32, w=32, dtype=bf16, bwd_config=c))
           for c in cs2.BWD_CONFIGS]
    # v3 sequential backward (MAMBAST_SCAN_BWD=v3): tuned pick, then each (BD, warps)
    v2 += [("v3seq train 256 S24 bf16", row_train_v2, dict(S=24, h=32, w=32, dtype=bf16, bwd="v3")),
           ("v3seq train 256 S8 fp32", row_train_v2, dict(S=8, h=32, w=32, dtype=f32, bwd="v3"))]
    v2 += [(f"v3seq sweep bwd {c}", row_train_v2, dict(S=24, h=32, w=32, dtype=bf16, bwd_config=c, bwd="v3"))
           for c in cs2.SEQ_BWD3_CONFIGS]
    v1_key = [
        ("v1 enc 512 B8 bf16", row_fwd, dict(S=8, G=1, h=64, w=64, dtype=bf16)),
        ("v1 train 256 S8 fp32", row_train, dict(S=8, h=32, w=32, dtype=f32)),
        ("v1 dec 512 G8 bf16", row_fwd, dict(S=1, G=8, h=64, w=64, dtype=bf16)),
    ]
    v2 += [("merge norm gate 512 B8", row_merge_norm, dict(S=8, G=1, h=64, w=64)),
           ("merge norm gate 1080p B4", row_merge_norm, dict(S=4, G=1, h=135, w=240)),
           ("residual norm 512 B64", row_residual_norm, dict(B=64, h=64, w=64)),
           ("residual norm 1080p B16", row_residual_norm, dict(B=16, h=135, w=240)),
           ("dwconv silu 512 B64", row_dwconv_silu, dict(B=64, h=64, w=64)),
           ("dwconv silu 1080p B16", row_dwconv_silu, dict(B=16, h=135, w=240))]
    # CNN-decoder glue, 512² batch 16: the 64-channel full-size layer (no upsample) and the ×2 into it
    v2 += [("pad nhwc 512 B16 C64", row_pad, dict(B=16, C=64, h=512, w=512, scale=1)),
           ("pad nhwc up2 256->512 B16 C64", row_pad, dict(B=16, C=64, h=256, w=256, scale=2)),
           ("pad nhwc up2 64->128 B16 C256", row_pad, dict(B=16, C=256, h=64, w=64, scale=2))]
    jobs = [("ceiling", row_copy_ceiling, {})] + v2 + v1_key
    if args.only:
        import re
        jobs = jobs[:1] + [j for j in jobs[1:] if re.search(args.only, j[0])]
    if args.v1_all:
        jobs += _v1_jobs(args, bf16, f32)
    return _run(jobs, args, gen)


def _v1_jobs(args, bf16, f32):
    jobs = [
        ("ceiling", row_copy_ceiling, {}),
        # encoder form (S = B images, G = 1) at 512^2
        ("enc 512 B1 bf16", row_fwd, dict(S=1, G=1, h=64, w=64, dtype=bf16, copies=True)),
        ("enc 512 B8 bf16", row_fwd, dict(S=8, G=1, h=64, w=64, dtype=bf16, copies=True)),
        ("enc 512 B1 fp32", row_fwd, dict(S=1, G=1, h=64, w=64, dtype=f32, copies=True)),
        ("enc 512 B8 fp32", row_fwd, dict(S=8, G=1, h=64, w=64, dtype=f32, copies=True)),
        ("enc 512 B8 bf16 kernel only", row_fwd, dict(S=8, G=1, h=64, w=64, dtype=bf16, kernel_only=True)),
        ("merge sum 512 B8", row_merge, dict(S=8, G=1, h=64, w=64)),
        # decoder form: one style recurrence, G contents
        ("dec 512 G1 bf16", row_fwd, dict(S=1, G=1, h=64, w=64, dtype=bf16)),
        ("dec 512 G8 bf16", row_fwd, dict(S=1, G=8, h=64, w=64, dtype=bf16)),
        ("dec 512 G8 bf16 kernel only", row_fwd, dict(S=1, G=8, h=64, w=64, dtype=bf16, kernel_only=True)),
        # L sweep, B = 1
        ("L 256 B1 bf16", row_fwd, dict(S=1, G=1, h=32, w=32, dtype=bf16, copies=True)),
        ("L 1024 B1 bf16", row_fwd, dict(S=1, G=1, h=128, w=128, dtype=bf16, copies=True)),
        ("L 2048 B1 bf16", row_fwd, dict(S=1, G=1, h=256, w=256, dtype=bf16)),
        ("L 512x768 B1 bf16", row_fwd, dict(S=1, G=1, h=64, w=96, dtype=bf16)),
        # training: backward vs forward
        ("train 256 B8 fp32", row_train, dict(S=8, h=32, w=32, dtype=f32)),
        ("train 512 B8 fp32", row_train, dict(S=8, h=64, w=64, dtype=f32)),
    ]
    if not args.no_sweep:
        for cfg in cs.FWD_CONFIGS:
            jobs.append((f"sweep fwd {cfg}", row_fwd, dict(S=8, G=1, h=64, w=64, dtype=bf16, config=cfg,
                                                           kernel_only=True)))
        for cfg in cs.FWD_CONFIGS:
            jobs.append((f"sweep fwd B1 {cfg}", row_fwd, dict(S=1, G=1, h=64, w=64, dtype=bf16, config=cfg,
                                                              kernel_only=True)))
        for bcfg in cs.BWD_CONFIGS:
            jobs.append((f"sweep bwd {bcfg}", row_train, dict(S=8, h=32, w=32, dtype=f32, config=(32, 8, 4, 4),
                                                              bwd_config=bcfg)))
    return jobs[1:]


def _run(jobs, args, gen):
    rows = []
    t_start = time.time()
    for name, fn, kw in jobs:
        t0 = time.time()
        try:
            if fn is row_copy_ceiling:
                r = fn()
            elif "gen" in inspect.signature(fn).parameters:
                r = fn(name, gen=gen, **kw)
            else:
                r = fn(name, **kw)
            torch.cuda.synchronize()
        except Exception as e:
            traceback.print_exc()
            r = dict(name=name, error=f"{type(e).__name__}: {e}"[:300])
        r["wall_s"] = round(time.time() - t0, 1)
        rows.append(r)
        print(json.dumps(r, default=str), flush=True)
        torch.cuda.empty_cache()

    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                           rows=rows, tune_cache=cs._TUNE_CACHE, total_s=time.time() - t_start), f, indent=1,
                      default=str)

    print(f"\n{'row':34} {'ms':>8} {'GB/s':>7} {'Gop/s':>7}  config            extra")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:34} ERROR {r['error']}")
            continue
        extra = ""
        if r.get("copies_ms") is not None:
            extra += f"copies {r['copies_ms']:.3f}"
            if r.get("anchor_total_ms"):
                extra += f" | anchor scan+copies {r['anchor_total_ms']:.3f} -> x{r['anchor_total_ms'] / r['ms']:.2f}"
        if "torch_ms" in r:
            extra += f"torch ops {r['torch_ms']:.3f} -> x{r['speedup']:.2f}" + (f" exact {r['exact']}" if "exact" in r else "")
        if "fwd_train_ms" in r:
            extra += (f"fwd(save) {r['fwd_train_ms']:.3f} fwd(inf) {r['fwd_infer_ms']:.3f} "
                      f"bwd/fwd {r['bwd_over_fwd']:.2f} autograd f+b {r['fwd_bwd_autograd_ms']:.3f} bcfg {r['bwd_config']}")
        print(f"{r['name']:34} {r['ms']:8.3f} {r.get('GBps', 0):7.0f} {r.get('Gops', 0):7.0f}  "
              f"{str(r.get('config', '')):17} {extra}")
    print(f"total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
