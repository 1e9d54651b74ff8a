"""GPU parity check for the Triton cross-scan at real sizes (run through the device tool).

    python kernels/check_gpu.py --out $OUT/check.json

Forward: Di=1024, N=16, K=4 on grids 32x32, 64x64, 128x128, 64x96, S in {1,2}, G in {1,8}, fp32 inputs (rel. error
< 1e-5 vs the fp64 reference) and bf16 inputs (< 1e-2 vs the fp64 reference on the fp32 originals; also reported vs
the rounded inputs). Every row also checks that two runs are bitwise equal (determinism) and that NaN-poisoned
internal buffers leave no NaN behind. Backward: all seven gradients at 32x32 and 64x64 vs fp64 autograd through the
reference. Then every forward / backward block config once at 64x96. A failing row prints its error and the script
goes on; the table comes last.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback

os.environ.setdefault("MAMBAST_SCAN_TUNE", "0")  # parity of the default config; configs are swept explicitly below

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
try:
    import mambast_kernels  # noqa: F401  installed package
except ImportError:  # run from a checkout without `pip install -e .`: map the folder to the package name
    import importlib.util
    _spec = importlib.util.spec_from_file_location(
        "mambast_kernels", os.path.join(os.path.dirname(os.path.abspath(__file__)), "__init__.py"),
        submodule_search_locations=[os.path.dirname(os.path.abspath(__file__))])
    mambast_kernels = importlib.util.module_from_spec(_spec)
    sys.modules["mambast_kernels"] = mambast_kernels
    _spec.loader.exec_module(mambast_kernels)

import importlib

cs = importlib.import_module("mambast_kernels.cross_scan")
cs2 = importlib.import_module("mambast_kernels.cross_scan_v2")
cs3 = importlib.import_module("mambast_kernels.cross_scan_v3")
from mambast_kernels.scan_ref import cross_scan_ref  # noqa: E402

K = 4
DEV = "cuda"
DI, NS = 1024, 16  # channels per direction, states


# v3's forward (session 9; its FAST path, lg2.approx in inline PTX, runs on a GPU only): encoder and decoder shapes,
# a readout group, segments, a non-square grid, bf16 inputs, 1080p
V3_ROWS = [("fwd", dict(S=2, G=1, h=64, w=64, dtype=torch.float32, config=(64, 2, 0, 0, 4, 2))),
           ("fwd", dict(S=2, G=1, h=64, w=64, dtype=torch.bfloat16, config=(32, 1, 0, 0, 4, 2))),
           ("fwd", dict(S=2, G=5, h=32, w=48, dtype=torch.float32, config=(64, 2, 2, 0, 4, 2))),
           ("fwd", dict(S=1, G=8, h=64, w=64, dtype=torch.bfloat16, config=(64, 2, 0, 0, 4, 2, 168))),
           ("fwd", dict(S=1, G=1, h=64, w=96, dtype=torch.float32, config=(64, 2, 0, 16, 4, 2))),
           ("fwd", dict(S=1, G=1, h=135, w=240, dtype=torch.bfloat16, config=(64, 2, 0, 16, 4, 2))),
           ("fwd", dict(S=2, G=1, h=64, w=96, dtype=torch.float32, config=(64, 2, 0, 0, 4, 2, 0, 1))),   # exp2 on FMA
           # two / four lanes per channel (BD 16 / 8 on one warp: the states split over lanes; session 10)
           ("fwd", dict(S=2, G=1, h=64, w=64, dtype=torch.float32, config=(16, 1, 0, 0, 4, 2))),
           ("fwd", dict(S=2, G=1, h=32, w=32, dtype=torch.bfloat16, config=(16, 1, 0, 0, 4, 2, 128))),
           ("fwd", dict(S=2, G=1, h=32, w=48, dtype=torch.bfloat16, config=(8, 1, 0, 0, 4, 2))),
           ("fwd", dict(S=1, G=5, h=32, w=48, dtype=torch.float32, config=(16, 1, 1, 0, 4, 2)))]


def make_inputs(S, Di, N, G, h, w, gen):
    """Realistic ranges: dt = softplus(delta + bias) mostly in [1e-3, 1e-1] (Mamba's dt init), A = -exp(A_log) with
    the S4D-real init 1..N jittered, u/B/C ~ N(0, 1)."""
    L = h * w
    r = lambda *s: torch.randn(*s, generator=gen, device=DEV)  # noqa: E731
    u = r(S, Di, L)
    delta = r(S, K, Di, L) * 0.5
    dt0 = torch.exp(torch.rand(K * Di, generator=gen, device=DEV) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    bias = dt0 + torch.log(-torch.expm1(-dt0))                       # inverse softplus
    A = -(torch.arange(1, N + 1, device=DEV, dtype=torch.float32)[None, :] * torch.exp(r(K * Di, N) * 0.1))
    B = r(S, K, N, L)
    C = r(S, G, K, N, L)
    D = r(K * Di)
    return [u, delta, A, B, C, D, bias]


def _sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def ref_fwd(xs, h, w):
    """fp64 reference on the GPU, one recurrence at a time to bound memory."""
    xs64 = [x.double() for x in xs]
    S = xs64[0].shape[0]
    outs = []
    for s in range(S):
        sl = [xs64[0][s:s + 1], xs64[1][s:s + 1], xs64[2], xs64[3][s:s + 1], xs64[4][s:s + 1], xs64[5], xs64[6]]
        outs.append(cross_scan_ref(*sl, h, w, chunk=256))
    return torch.cat(outs, 0)


def _scan(impl):
    return cs2.cross_scan_triton_v2 if impl == "v2" else cs.cross_scan_triton


def row_forward(S, G, h, w, dtype, gen, config=None, impl="v2"):
    Di, N = DI, NS
    xs = make_inputs(S, Di, N, G, h, w, gen)
    xin = [x.to(dtype) if i not in (2, 5, 6) else x for i, x in enumerate(xs)]
    cs.POISON_BUFFERS = True
    try:
        t0 = time.time()
        y1 = _scan(impl)(*xin, h, w, config=config)
        _sync()
        t_first = time.time() - t0
        y2 = _scan(impl)(*xin, h, w, config=config)
        _sync()
    finally:
        cs.POISON_BUFFERS = False
    finite = bool(torch.isfinite(y1).all())
    det = bool(torch.equal(y1, y2))
    y_ref = ref_fwd(xs, h, w)
    err = rel(y1, y_ref)
    out = dict(kind=f"{impl}f", S=S, G=G, h=h, w=w, dtype=str(dtype).replace("torch.", ""), config=config,
               rel_err=err, finite=finite, deterministic=det, first_call_s=round(t_first, 2))
    if dtype == torch.float32:
        out["tol"] = 1e-5
    else:
        out["rel_err_vs_rounded_inputs"] = rel(y1, ref_fwd(xin, h, w))
        out["tol"] = 1e-2
    out["ok"] = finite and det and err < out["tol"]
    return out


def row_backward(S, G, h, w, gen, config=None, bwd_config=None, impl="v2", bwd="v1"):
    """bwd='v3': the sequential backward (default), 'v1': v1's chunked one (MAMBAST_SCAN_BWD, read at backward time)."""
    Di, N = DI, NS
    xs = make_inputs(S, Di, N, G, h, w, gen)
    xt = [x.clone().requires_grad_() for x in xs]
    old_bwd = os.environ.get("MAMBAST_SCAN_BWD")
    os.environ["MAMBAST_SCAN_BWD"] = bwd
    cs.POISON_BUFFERS = True
    try:
        y = _scan(impl)(*xt, h, w, config=config, bwd_config=bwd_config)
        dy = torch.randn(y.shape, generator=gen, device=DEV)
        g1 = torch.autograd.grad(y, xt, dy)
        g2 = torch.autograd.grad(_scan(impl)(*xt, h, w, config=config, bwd_config=bwd_config), xt, dy)
    finally:
        cs.POISON_BUFFERS = False
        if old_bwd is None:
            os.environ.pop("MAMBAST_SCAN_BWD", None)
        else:
            os.environ["MAMBAST_SCAN_BWD"] = old_bwd
    det = all(torch.equal(a, b) for a, b in zip(g1, g2))
    x64 = [x.double().requires_grad_() for x in xs]
    y64 = cross_scan_ref(*x64, h, w, chunk=256)
    g64 = torch.autograd.grad(y64, x64, dy.double())
    names = ["u", "delta", "A", "B", "C", "D", "delta_bias"]
    errs = {f"d{n}": rel(a, b) for n, a, b in zip(names, g1, g64)}
    finite = all(bool(torch.isfinite(g).all()) for g in g1)
    worst = max(errs.values())
    return dict(kind=f"{impl}b" + {"v1": "", "v3": "3"}[bwd], S=S, G=G, h=h, w=w, dtype="float32", config=config, bwd_config=bwd_config,
                rel_err=worst, grads=errs, y_rel_err=rel(y, y64), finite=finite, deterministic=det, tol=1e-5,
                ok=finite and det and worst < 1e-5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="< 60 s: v2 parity at training + inference shapes only")
    ap.add_argument("--v3", action="store_true", help="only v3's forward rows (a kernel change's check in ~20 s)")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA device"
    gen = torch.Generator(device=DEV)
    gen.manual_seed(int(time.time()) & 0xFFFF)  # fresh inputs every run (the seed is logged)
    print(f"device {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {cs.triton.__version__}")

    jobs = []
    if args.v3:
        jobs += V3_ROWS
    elif args.quick:  # < 60 s: v2 parity at the training and inference shapes (start of a training run)
        jobs += [("fwd", dict(S=2, G=1, h=32, w=32, dtype=torch.bfloat16)),
                 ("fwd", dict(S=2, G=1, h=64, w=64, dtype=torch.bfloat16)),
                 ("fwd", dict(S=1, G=8, h=64, w=64, dtype=torch.bfloat16)),
                 ("fwd", dict(S=2, G=1, h=32, w=48, dtype=torch.float32)),
                 ("fwd", dict(S=2, G=5, h=32, w=32, dtype=torch.float32, config=(64, 4, 2))),   # readout groups
                 ("fwd", dict(S=1, G=1, h=64, w=96, dtype=torch.float32, config=(64, 2, 0, 8))),  # segments
                 ("fwd", dict(S=1, G=4, h=48, w=40, dtype=torch.float32, config=(64, 4, 2, 5))),
                 *V3_ROWS,
                 ("bwd", dict(S=2, G=1, h=32, w=32)),
                 ("bwd", dict(S=1, G=2, h=16, w=24)),
                 # the sequential backward (default; the two rows above are v1's chunked backward)
                 ("bwd", dict(S=2, G=1, h=32, w=32, bwd="v3")),
                 ("bwd", dict(S=1, G=2, h=16, w=24, bwd="v3")),
                 ("bwd", dict(S=2, G=1, h=24, w=40, bwd="v3"))]
    else:
        grids = [(32, 32), (64, 64), (128, 128), (64, 96)]
        for (h, w) in grids:
            for S, G in [(2, 1), (1, 8)]:
                for dtype in (torch.float32, torch.bfloat16):
                    jobs.append(("fwd", dict(S=S, G=G, h=h, w=w, dtype=dtype)))
        for (h, w) in [(32, 32), (64, 64), (24, 40)]:
            jobs.append(("bwd", dict(S=2, G=1, h=h, w=w)))
        jobs.append(("bwd", dict(S=1, G=2, h=32, w=32)))
        for cfg in cs2.FWD_CONFIGS:
            jobs.append(("fwd", dict(S=1, G=2, h=64, w=96, dtype=torch.float32, config=cfg)))
        for cfg in cs2.FWD_SEG_CONFIGS:     # the segmented form, every config, and a 1080p grid with the tuned pick
            jobs.append(("fwd", dict(S=1, G=2, h=64, w=96, dtype=torch.float32, config=cfg)))
        jobs.append(("fwd", dict(S=1, G=1, h=135, w=240, dtype=torch.bfloat16)))
        jobs += V3_ROWS
        for cfg in cs3.FWD3_CONFIGS + cs3.FWD3_G_CONFIGS + cs3.FWD3_SEG_CONFIGS:     # v3: every config once
            jobs.append(("fwd", dict(S=1, G=5, h=64, w=96, dtype=torch.float32, config=cfg)))
        for bcfg in cs2.BWD_CONFIGS:
            jobs.append(("bwd", dict(S=1, G=1, h=32, w=48, bwd_config=bcfg)))
        # the sequential backward (default): tuned config on the bwd shapes above, then every config
        for (h, w) in [(32, 32), (64, 64), (24, 40)]:
            jobs.append(("bwd", dict(S=2, G=1, h=h, w=w, bwd="v3")))
        jobs.append(("bwd", dict(S=1, G=2, h=32, w=32, bwd="v3")))
        for bcfg in cs2.SEQ_BWD3_CONFIGS:
            jobs.append(("bwd", dict(S=1, G=1, h=32, w=48, bwd_config=bcfg, bwd="v3")))
        # v1 (the fallback, MAMBAST_SCAN_IMPL=v1) on the key rows
        jobs.append(("fwd", dict(S=2, G=1, h=64, w=64, dtype=torch.bfloat16, impl="v1")))
        jobs.append(("fwd", dict(S=1, G=8, h=64, w=96, dtype=torch.float32, impl="v1")))
        jobs.append(("bwd", dict(S=2, G=1, h=32, w=32, impl="v1")))

    rows = []
    t_start = time.time()
    for kind, kw in jobs:
        t0 = time.time()
        try:
            r = row_forward(gen=gen, **kw) if kind == "fwd" else row_backward(gen=gen, **kw)
            _sync()
        except Exception as e:  # keep going: one broken row must not hide the others
            traceback.print_exc()
            r = dict(kind=kind, **{k: (str(v) if k == "dtype" else v) for k, v in kw.items()}, ok=False,
                     error=f"{type(e).__name__}: {e}"[:300])
        r["wall_s"] = round(time.time() - t0, 1)
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "grads"}, default=str), flush=True)
        if DEV == "cuda":
            torch.cuda.empty_cache()

    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows,
                           total_s=time.time() - t_start), f, indent=1, default=str)

    print("\n kind  S  G   h x w     dtype     config          rel_err   tol    det fin ok   s")
    for r in rows:
        cfg = r.get("bwd_config") or r.get("config") or "default"
        print(f" {r['kind']:4} {r.get('S', ''):>2} {r.get('G', ''):>2} {r.get('h', '')!s:>4}x{r.get('w', '')!s:<4} "
              f"{str(r.get('dtype', '')).replace('torch.', ''):9} {str(cfg):15} "
              f"{r.get('rel_err', float('nan')):9.2e} {r.get('tol', float('nan')):6.0e} "
              f"{str(r.get('deterministic', '-'))[0]:>3} {str(r.get('finite', '-'))[0]:>3} "
              f"{'OK' if r.get('ok') else 'FAIL':4} {r['wall_s']:5.1f}"
              + (f"  {r['error']}" if 'error' in r else ""))
    n_ok = sum(bool(r.get("ok")) for r in rows)
    print(f"{n_ok}/{len(rows)} rows ok, {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
