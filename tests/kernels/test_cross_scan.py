"""Cross-scan kernels vs the fp64 reference.

CPU: run with `TRITON_INTERPRET=1 pytest tests/kernels -q` (the variable must be set before triton is imported).
Without it and without CUDA, the Triton tests skip; the reference-vs-literal-loop test always runs.
"""
from __future__ import annotations

import os

import pytest
import torch

from mambast_kernels import cross_scan_ref

K = 4
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
_HAS_TRITON_PATH = _INTERPRET or torch.cuda.is_available()
needs_triton = pytest.mark.skipif(not _HAS_TRITON_PATH, reason="needs CUDA or TRITON_INTERPRET=1 (set before import)")
DEVICE = "cuda" if (torch.cuda.is_available() and not _INTERPRET) else "cpu"

GRIDS = [(3, 5), (4, 4), (1, 7)]


def _inputs(S, Di, N, G, h, w, dtype=torch.float32, gen=None):
    """Fresh random inputs in realistic ranges (not seeded per test: every run draws new ones)."""
    L = h * w
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    u = r(S, Di, L)
    delta = r(S, K, Di, L) * 0.5
    A = -torch.exp(r(K * Di, N) * 0.5)
    B = r(S, K, N, L)
    C = r(S, G, K, N, L)
    D = r(K * Di)
    bias = r(K * Di) * 0.5
    xs = [u, delta, A, B, C, D, bias]
    return [x.to(dtype) if i not in (2, 5, 6) else x for i, x in enumerate(xs)]


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


# ----------------------------------------------------------------------------------------------------------------
# The reference itself vs a literal per-direction loop with materialised flips / transposes (spec §2.7 + §3)
# ----------------------------------------------------------------------------------------------------------------
def _to_dir(x, k, h, w):
    """Grid-ordered (..., L) -> direction k's sequence, built the way the official code builds it."""
    g = x.reshape(*x.shape[:-1], h, w)
    row = g.flatten(-2)
    col = g.transpose(-1, -2).flatten(-2)
    return [row, col, row.flip(-1), col.flip(-1)][k]


def _from_dir(y, k, h, w):
    """Direction k's sequence (..., L) -> grid order (the merge's inverse mapping)."""
    if k >= 2:
        y = y.flip(-1)
    if k % 2 == 1:
        y = y.reshape(*y.shape[:-1], w, h).transpose(-1, -2)
    return y.reshape(*y.shape[:-2], h * w) if k % 2 == 1 else y


def _literal_loop(u, delta, A, B, C, D, bias, h, w):
    S, Di, L = u.shape
    G, N = C.shape[1], A.shape[1]
    out = torch.zeros(S, G, Di, L, dtype=torch.float64)
    for k in range(K):
        uk = _to_dir(u, k, h, w)                                      # (S, Di, L)
        dk = torch.nn.functional.softplus(_to_dir(delta[:, k], k, h, w) + bias[k * Di:(k + 1) * Di, None])
        Bk = _to_dir(B[:, k], k, h, w)                                # (S, N, L)
        Ck = _to_dir(C[:, :, k], k, h, w)                             # (S, G, N, L)
        Ak = A[k * Di:(k + 1) * Di]                                   # (Di, N)
        Dk = D[k * Di:(k + 1) * Di]
        hs = torch.zeros(S, Di, N, dtype=torch.float64)
        yk = torch.zeros(S, G, Di, L, dtype=torch.float64)
        for t in range(L):
            dt = dk[:, :, t]                                          # (S, Di)
            hs = torch.exp(dt[..., None] * Ak) * hs + (dt * uk[:, :, t])[..., None] * Bk[:, None, :, t]
            yk[..., t] = torch.einsum("sdn,sgn->sgd", hs, Ck[..., t]) + Dk * uk[:, None, :, t]
        out += _from_dir(yk, k, h, w)
    return out


@pytest.mark.parametrize("hw", [(3, 5), (4, 4), (2, 3)])
def test_reference_matches_literal_loop(hw):
    h, w = hw
    xs = [x.double() for x in _inputs(2, 3, 4, 2, h, w)]
    y_ref = cross_scan_ref(*xs, h, w, chunk=4)
    y_loop = _literal_loop(*xs, h, w)
    assert _rel(y_ref, y_loop) < 1e-12, _rel(y_ref, y_loop)


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture
def poisoned(monkeypatch):
    """Fill every internal kernel buffer with NaN before the launch (unwritten elements surface as NaN)."""
    import importlib
    mod = importlib.import_module("mambast_kernels.cross_scan")  # the module (the package re-exports a function)
    monkeypatch.setattr(mod, "POISON_BUFFERS", True)
    return mod


def _check(name, out, ref, tol):
    assert torch.isfinite(out).all(), f"{name}: non-finite (unwritten?) elements"
    err = _rel(out, ref)
    maxdiff = (out.double() - ref.double()).abs().max().item()
    print(f"{name}: rel {err:.2e} max|diff| {maxdiff:.2e}")
    assert err < tol, f"{name}: rel error {err:.3e} >= {tol}"


@needs_triton
@pytest.mark.parametrize("G", [1, 3])
@pytest.mark.parametrize("hw", GRIDS)
def test_forward_fp32(poisoned, hw, G):
    h, w = hw
    xs = [x.to(DEVICE) for x in _inputs(2, 8, 4, G, h, w)]
    y = poisoned.cross_scan_triton(*xs, h, w)
    assert y.shape == (2, G, 8, h * w) and y.dtype == torch.float32
    y_ref = cross_scan_ref(*[x.double() for x in xs], h, w)
    _check("y", y, y_ref, 1e-5)


@needs_triton
@pytest.mark.parametrize("dtype,hw", [(torch.bfloat16, (3, 5)), (torch.float16, (1, 7))])
def test_forward_low_precision_inputs(poisoned, dtype, hw):
    h, w = hw
    xs = [x.to(DEVICE) for x in _inputs(2, 8, 4, 2, h, w, dtype=dtype)]
    y = poisoned.cross_scan_triton(*xs, h, w)
    assert y.dtype == torch.float32
    # Against the same (rounded) inputs in fp64: the kernel upcasts exactly and keeps fp32 state.
    _check("y", y, cross_scan_ref(*[x.double() for x in xs], h, w), 1e-5)


@needs_triton
@pytest.mark.parametrize("G", [1])
@pytest.mark.parametrize("hw", GRIDS)
def test_backward_fp32(poisoned, hw, G):
    h, w = hw
    xs = [x.to(DEVICE) for x in _inputs(2, 8, 4, G, h, w)]
    xs_t = [x.clone().requires_grad_() for x in xs]
    xs_r = [x.double().requires_grad_() for x in xs]
    y = poisoned.cross_scan_triton(*xs_t, h, w)
    y_ref = cross_scan_ref(*xs_r, h, w)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, xs_t, dy)
    grads_ref = torch.autograd.grad(y_ref, xs_r, dy.double())
    _check("y", y, y_ref, 1e-5)
    for name, g, gr in zip(["u", "delta", "A", "B", "C", "D", "delta_bias"], grads, grads_ref):
        assert g.shape == gr.shape and g.dtype == xs[0].dtype
        _check(f"d{name}", g, gr, 1e-5)


@needs_triton
def test_backward_several_readouts(poisoned):
    """G > 1 (decoder form) backward: the adjoint sums the G readouts."""
    h, w = 2, 3
    xs = [x.to(DEVICE) for x in _inputs(1, 8, 4, 3, h, w)]
    xs_t = [x.clone().requires_grad_() for x in xs]
    xs_r = [x.double().requires_grad_() for x in xs]
    y = poisoned.cross_scan_triton(*xs_t, h, w)
    y_ref = cross_scan_ref(*xs_r, h, w)
    dy = torch.randn_like(y)
    for name, g, gr in zip(["u", "delta", "A", "B", "C", "D", "delta_bias"],
                           torch.autograd.grad(y, xs_t, dy), torch.autograd.grad(y_ref, xs_r, dy.double())):
        _check(f"d{name}", g, gr, 1e-5)


@needs_triton
def test_forward_deterministic_and_dispatch():
    from mambast_kernels import cross_scan
    h, w = 1, 7
    xs = [x.to(DEVICE) for x in _inputs(1, 8, 4, 1, h, w)]
    y1 = cross_scan(*xs, h, w, backend="triton")
    y2 = cross_scan(*xs, h, w, backend="triton")
    assert torch.equal(y1, y2)


# ----------------------------------------------------------------------------------------------------------------
# v2 (sequential channel-last forward + v1 backward in channel-last mode)
# ----------------------------------------------------------------------------------------------------------------
@needs_triton
@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("G,hw", [(1, (3, 5)), (3, (4, 4)), (2, (1, 7))])
def test_v2_forward_backward(poisoned, layout, G, hw):
    from mambast_kernels.cross_scan_v2 import cross_scan_triton_v2
    h, w = hw
    xs = [x.to(DEVICE) for x in _inputs(2, 8, 4, G, h, w)]
    xs_r = [x.double().requires_grad_() for x in xs]
    y_ref = cross_scan_ref(*xs_r, h, w)
    if layout == "cl":
        xs = [xs[0].transpose(1, 2).contiguous(), xs[1].transpose(2, 3).contiguous()] + xs[2:]
    xs_t = [x.clone().requires_grad_() for x in xs]
    y = cross_scan_triton_v2(*xs_t, h, w, layout=layout)
    dy_ref = torch.randn_like(y_ref)
    dy = dy_ref.float() if layout == "cf" else dy_ref.float().transpose(-1, -2).contiguous()
    _check("y", y if layout == "cf" else y.transpose(-1, -2), y_ref, 1e-5)
    grads = list(torch.autograd.grad(y, xs_t, dy))
    if layout == "cl":
        grads[0], grads[1] = grads[0].transpose(1, 2), grads[1].transpose(2, 3)
    for name, g, gr in zip(["u", "delta", "A", "B", "C", "D", "delta_bias"], grads,
                           torch.autograd.grad(y_ref, xs_r, dy_ref)):
        assert g.shape == gr.shape
        _check(f"d{name}", g, gr, 1e-5)


@needs_triton
@pytest.mark.parametrize("G,GB,hw", [(3, 2, (3, 5)), (5, 2, (2, 3)), (4, 1, (4, 4)), (3, 4, (1, 7))])
def test_v2_readout_groups(poisoned, G, GB, hw):
    """Decoder form: G contents share one recurrence; a program owns GB of them (the recurrence is recomputed per
    group). Every group split gives the reference's output; under the interpreter also the same bytes as the one-group
    launch. Compiled for a GPU the variants may contract multiply-adds differently (an H100 gave different last bits),
    so there they agree to fp32 rounding; one config always gives the same bytes."""
    from mambast_kernels.cross_scan_v2 import cross_scan_fwd_cl
    h, w = hw
    xs = [x.to(DEVICE) for x in _inputs(2, 8, 4, G, h, w)]
    y_ref = cross_scan_ref(*[x.double() for x in xs], h, w)
    u_cl, d_cl = xs[0].transpose(1, 2).contiguous(), xs[1].transpose(2, 3).contiguous()
    with torch.no_grad():
        y, hck, cfg = cross_scan_fwd_cl(u_cl, d_cl, *xs[2:], h, w, config=(8, 1, GB))
        y_one = cross_scan_fwd_cl(u_cl, d_cl, *xs[2:], h, w, config=(8, 1))[0]
    assert hck is None and tuple(cfg) == (8, 1, GB)
    _check("y", y.transpose(-1, -2), y_ref, 1e-5)
    if DEVICE == "cpu":
        assert torch.equal(y, y_one)
    else:
        torch.testing.assert_close(y, y_one, rtol=1e-5, atol=1e-5)


def _fwd_cl_case(G: int, hw: tuple[int, int]):
    """Fresh inputs for the channel-last forward (S = 2, Di = 12, N = 4, G readouts), its fp64 reference output, and
    a runner: run(config, save=False) -> cross_scan_fwd_cl's (y, checkpoints, config used)."""
    from mambast_kernels.cross_scan_v2 import cross_scan_fwd_cl
    h, w = hw
    xs = [x.to(DEVICE) for x in _inputs(2, 12, 4, G, h, w)]
    y_ref = cross_scan_ref(*[x.double() for x in xs], h, w)
    u_cl, d_cl = xs[0].transpose(1, 2).contiguous(), xs[1].transpose(2, 3).contiguous()

    def run(config, save=False):
        with torch.no_grad():
            return cross_scan_fwd_cl(u_cl, d_cl, *xs[2:], h, w, config=config, save_states=save)
    return y_ref, run


@needs_triton
@pytest.mark.parametrize("G,cfg,hw", [(1, (8, 1, 0, 4), (3, 5)), (1, (8, 1, 0, 3), (1, 7)), (3, (8, 1, 2, 2), (4, 4)),
                                      (2, (8, 1, 0, 5), (2, 3)), (1, (8, 1, 0, 40), (3, 5)),
                                      (1, (8, 1, 0, 4, 4), (3, 5)), (2, (8, 1, 0, 3, 4), (2, 3))])
def test_v2_segments(poisoned, G, cfg, hw):
    """Segmented form (long sequences): P segments scanned from zero, their end states combined in order, then every
    segment rescanned from its true start state. Same output as the reference; more segments than steps are fine."""
    y_ref, run = _fwd_cl_case(G, hw)
    y, hck, used = run(cfg)
    assert hck is None and tuple(used) == cfg
    _check("y", y.transpose(-1, -2), y_ref, 1e-5)


@needs_triton
@pytest.mark.parametrize("G,cfg,hw,save", [(1, (8, 1, 0, 0, 4), (3, 5), False), (1, (8, 1, 0, 0, 4), (1, 7), True),
                                           (3, (8, 1, 2, 0, 4), (4, 4), False), (1, (8, 1, 0, 0, 4), (2, 2), True),
                                           (2, (8, 1, 0, 0, 4), (1, 3), False)])
def test_v2_prefetch_depth_4(poisoned, G, cfg, hw, save):
    """Loads issued 4 steps ahead (PF = 4: the loop unrolled by 4, steps past the end skipped): the reference's
    output, and the same bytes (outputs and checkpoints) as PF = 1, for sequences shorter than 4, not a multiple of
    4, readout groups and saved checkpoints."""
    y_ref, run = _fwd_cl_case(G, hw)
    y, hck, used = run(cfg, save)
    y1, hck1, _ = run(cfg[:3], save)
    assert tuple(used) == cfg and (hck is not None) == save
    _check("y", y.transpose(-1, -2), y_ref, 1e-5)
    assert torch.equal(y, y1) and (not save or torch.equal(hck, hck1))


@needs_triton
@pytest.mark.parametrize("G,cfg,hw,save", [(1, (8, 1, 0, 0, 4, 1), (3, 5), True), (1, (8, 1, 0, 0, 1, 1), (1, 7), True),
                                           (3, (8, 1, 2, 0, 4, 1), (4, 4), False), (2, (8, 1, 0, 3, 4, 1), (2, 3), False),
                                           (3, (8, 1, 2, 2, 1, 1), (3, 5), False),
                                           (1, (8, 1, 0, 0, 4, 1, 168), (2, 3), True)])
def test_v2_state_tile_transposed(poisoned, G, cfg, hw, save):
    """The (N, BD) state tile (config TN = 1, A read transposed): the reference's output with PF 1 and 4, readout
    groups, segments and a channel count that is not a multiple of BD; its checkpoints are the (BD, N) tile's bytes
    (the backward reads them), and its outputs agree with it to fp32 rounding (the sum over N runs in another order).
    A 7th element, a register cap, is passed to the compiler (ignored by the interpreter)."""
    y_ref, run = _fwd_cl_case(G, hw)
    y, hck, used = run(cfg, save)
    y0, hck0, _ = run(cfg[:5], save)
    assert tuple(used) == cfg and (hck is not None) == save
    _check("y", y.transpose(-1, -2), y_ref, 1e-5)
    torch.testing.assert_close(y, y0, rtol=1e-5, atol=1e-6)
    assert not save or torch.equal(hck, hck0)


@needs_triton
@pytest.mark.parametrize("G,cfg,hw", [(1, (8, 1, 0, 0, 4, 2), (3, 5)), (1, (8, 1, 0, 0, 4, 2), (1, 7)),
                                      (1, (8, 1, 0, 0, 4, 2), (2, 2)), (1, (8, 1, 0, 0, 4, 2), (1, 2)),
                                      (1, (8, 1, 0, 0, 4, 2), (5, 3)), (3, (8, 1, 2, 0, 4, 2), (4, 4)),
                                      (3, (8, 1, 0, 0, 4, 2), (3, 2)), (2, (8, 1, 0, 3, 4, 2), (2, 3)),
                                      (3, (8, 1, 2, 2, 4, 2), (3, 5)), (1, (8, 1, 0, 40, 4, 2), (3, 5)),
                                      (1, (8, 1, 0, 0, 4, 2, 200), (2, 3)), (2, (8, 1, 1, 0, 4, 2, 0, 1), (3, 5)),
                                      (1, (8, 1, 0, 3, 4, 2, 0, 1), (4, 3))])
def test_v3_forward(poisoned, G, cfg, hw):
    """v3's forward (config element 6 = 2: positions from counters, B and C read as int64 words in fp32, 4-step
    groups without branches and a tail of 0-3 steps, unrolled readout groups): the reference's output for sequences
    shorter than 4 and not a multiple of 4, both grid orientations, readout groups (G not a multiple of the group),
    segments (more than steps too) and a channel count that is not a multiple of BD."""
    y_ref, run = _fwd_cl_case(G, hw)
    y, hck, used = run(cfg)
    assert tuple(used) == cfg and hck is None
    _check("y", y.transpose(-1, -2), y_ref, 1e-5)


@needs_triton
def test_v3_exp2_on_the_fma_pipe():
    """_exp2_fma (v3's opt-in MUFU-free exponential): relative error within 5e-7 of exp2 over the range the scan
    uses (dt * A <= 0), integers and half-integers included; far below the fp32 range it gives a tiny positive
    number, never garbage from the exponent field."""
    from mambast_kernels.cross_scan_v3 import exp2_fma

    x = torch.cat([-torch.rand(3000, dtype=torch.float64) * 120, torch.arange(-60, 1, 0.5, dtype=torch.float64),
                   torch.tensor([-0.0, -1e-30, -124.9, -200.0, -1e30], dtype=torch.float64)]).float().to(DEVICE)
    y = exp2_fma(x)
    ref = torch.exp2(x.double().clamp(min=-125.0))
    assert torch.isfinite(y).all() and (y > 0).all()
    rel = ((y.double() - ref) / ref).abs()
    assert rel.max().item() < 5e-7, rel.max().item()


@needs_triton
def test_v3_is_a_tuner_candidate_for_inference_only(monkeypatch):
    """v3 stores no checkpoints: the tuner offers its configs for inference calls only, "all readouts in one program"
    (GB 0) for a single readout only, and none at all with MAMBAST_SCAN3=0."""
    from mambast_kernels import cross_scan_v2 as cs2
    from mambast_kernels import cross_scan_v3 as v3
    seen = {}
    monkeypatch.setattr(cs2.v1, "_interpreting", lambda: False)
    monkeypatch.setattr(cs2.v1, "_tune", lambda key, cands, run_one, default: seen.setdefault(key, cands)[0])
    cs2.fwd_config("a", None, v3_ok=False)
    cs2.fwd_config("b", None, v3_ok=True, grouped=True, segmented=True)
    cs2.fwd_config("c", None, v3_ok=True, segmented=True)
    assert not [c for c in seen["a"] if len(c) > 5 and c[5] == 2]
    picked = [c for c in seen["b"] if len(c) > 5 and c[5] == 2]
    assert picked and all(c[2] for c in picked) and set(picked) <= set(
        v3.FWD3_CONFIGS + v3.FWD3_G_CONFIGS + v3.FWD3_SEG_CONFIGS)
    single = [c for c in seen["c"] if len(c) > 5 and c[5] == 2]
    assert set(v3.FWD3_CONFIGS) <= set(single) and all(not c[2] for c in single)
    monkeypatch.setenv("MAMBAST_SCAN2_FWD_CONFIG", "64,2,0,0,4,2")       # a pinned v3 config: inference calls only
    assert tuple(cs2.fwd_config("d", None, v3_ok=True)) == (64, 2, 0, 0, 4, 2)
    assert len(cs2.fwd_config("e", None, v3_ok=False)) < 6
    monkeypatch.setenv("MAMBAST_SCAN3", "0")
    assert not v3.allowed()


@needs_triton
@pytest.mark.parametrize("G,hw,Di", [(1, (3, 5), 12), (2, (2, 3), 8), (1, (1, 17), 8)])
def test_v2_seq_backward_prefetch(poisoned, G, hw, Di):
    """The sequential backward with each pass's next loads issued first (config PF = 1) gives the same gradients,
    byte for byte, as without (the arithmetic is the same; only the loads move): partial chunks, G > 1."""
    from mambast_kernels.cross_scan_v2 import cross_scan_bwd_seq3_cl, cross_scan_fwd_cl
    h, w = hw
    xs = [x.to(DEVICE) for x in _inputs(2, Di, 4, G, h, w)]
    u_cl, d_cl = xs[0].transpose(1, 2).contiguous(), xs[1].transpose(2, 3).contiguous()
    with torch.no_grad():
        y, hck, _ = cross_scan_fwd_cl(u_cl, d_cl, *xs[2:], h, w, save_states=True)
        dy = torch.randn(y.shape, device=DEVICE)
        plain = cross_scan_bwd_seq3_cl(u_cl, d_cl, *xs[2:], dy, hck, h, w, config=(8, 1))
        pf = cross_scan_bwd_seq3_cl(u_cl, d_cl, *xs[2:], dy, hck, h, w, config=(8, 1, 0, 1))
    for a, b in zip(plain, pf):
        assert torch.isfinite(b).all() and torch.equal(a, b)


@needs_triton
def test_v2_bf16_and_dispatch(monkeypatch):
    from mambast_kernels import cross_scan
    h, w = 3, 5
    xs = [x.to(DEVICE) for x in _inputs(2, 8, 4, 2, h, w, dtype=torch.bfloat16)]
    y_ref = cross_scan_ref(*[x.double() for x in xs], h, w)
    y2 = cross_scan(*xs, h, w, backend="triton")
    _check("y v2", y2, y_ref, 1e-5)
    assert torch.equal(y2, cross_scan(*xs, h, w, backend="triton"))
    ycl = cross_scan(xs[0].transpose(1, 2).contiguous(), xs[1].transpose(2, 3).contiguous(), *xs[2:], h, w,
                     backend="triton", layout="cl")
    assert torch.equal(ycl.transpose(-1, -2), y2)
    monkeypatch.setenv("MAMBAST_SCAN_IMPL", "v1")
    _check("y v1", cross_scan(*xs, h, w, backend="triton"), y_ref, 1e-5)


# ----------------------------------------------------------------------------------------------------------------
# the v2 forward's two backwards (MAMBAST_SCAN_BWD, read at backward time): v3 (sequential, default) and v1 (chunked)
# ----------------------------------------------------------------------------------------------------------------
@needs_triton
@pytest.mark.parametrize("impl,fn", [("v3", "cross_scan_bwd_seq3_cl"), ("v1", "cross_scan_bwd_cl")])
@pytest.mark.parametrize("layout,G,hw,Di", [("cl", 1, (3, 5), 8), ("cf", 2, (2, 3), 12), ("cl", 2, (1, 7), 8)])
def test_v2_seq_backward(poisoned, monkeypatch, layout, G, hw, Di, impl, fn):
    """All seven gradients of each backward vs fp64 autograd through the reference. Di=12 with the
    interpreter's BD=8 leaves a partial channel block; L=15, 6, 7 leave a partial last chunk (BT=8) or a single one."""
    cs2 = pytest.importorskip("mambast_kernels.cross_scan_v2")
    h, w = hw
    xs = [x.to(DEVICE) for x in _inputs(2, Di, 4, G, h, w)]
    xs_r = [x.double().requires_grad_() for x in xs]
    y_ref = cross_scan_ref(*xs_r, h, w)
    if layout == "cl":
        xs = [xs[0].transpose(1, 2).contiguous(), xs[1].transpose(2, 3).contiguous()] + xs[2:]
    xs_t = [x.clone().requires_grad_() for x in xs]
    monkeypatch.delenv("MAMBAST_SCAN_BWD", raising=False)
    y = cs2.cross_scan_triton_v2(*xs_t, h, w, layout=layout)
    calls = []
    seq = getattr(cs2, fn)
    monkeypatch.setattr(cs2, fn, lambda *a, **k: calls.append(1) or seq(*a, **k))
    monkeypatch.setenv("MAMBAST_SCAN_BWD", impl)          # set after the forward: the selection is read at call time
    dy_ref = torch.randn_like(y_ref)
    dy = dy_ref.float() if layout == "cf" else dy_ref.float().transpose(-1, -2).contiguous()
    grads = list(torch.autograd.grad(y, xs_t, dy))
    assert calls == [1], f"MAMBAST_SCAN_BWD={impl} did not select {fn}"
    if layout == "cl":
        grads[0], grads[1] = grads[0].transpose(1, 2), grads[1].transpose(2, 3)
    for name, g, gr in zip(["u", "delta", "A", "B", "C", "D", "delta_bias"], grads,
                           torch.autograd.grad(y_ref, xs_r, dy_ref)):
        assert g.shape == gr.shape
        _check(f"d{name}", g, gr, 1e-5)


@needs_triton
def test_v2_bwd_selection(monkeypatch):
    cs2 = pytest.importorskip("mambast_kernels.cross_scan_v2")
    monkeypatch.delenv("MAMBAST_SCAN_BWD", raising=False)
    assert cs2.bwd_impl() == "v3"
    monkeypatch.setenv("MAMBAST_SCAN_BWD", "V1")
    assert cs2.bwd_impl() == "v1"
    monkeypatch.setenv("MAMBAST_SCAN_BWD", "v2")
    with pytest.raises(ValueError):
        cs2.bwd_impl()


def test_reference_chunking_does_not_change_the_result():
    """The reference's chunk size (a CPU speed knob, default 16 // S) gives the same bytes for any value."""
    xs = _inputs(2, 8, 4, 3, 5, 7)
    ys = [cross_scan_ref(*xs, 5, 7, chunk=c) for c in (None, 1, 4, 64)]
    assert all(torch.equal(ys[0], y) for y in ys[1:])
