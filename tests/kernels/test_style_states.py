"""Stored style states + batched-matmul readout (kernels/style_states.py) vs the reference scan (Triton interpreter
on CPU): the states kernel against its loop reference, the readout identity against `cross_scan_ref`, and the
decoder's `scan_norm_gate` through both forms."""
from __future__ import annotations

import os

import pytest
import torch

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
needs_triton = pytest.mark.skipif(not (_INTERPRET or torch.cuda.is_available()),
                                  reason="needs CUDA or TRITON_INTERPRET=1 (set before import)")
DEVICE = "cuda" if (torch.cuda.is_available() and not _INTERPRET) else "cpu"
K = 4


def _inputs(S, G, Di, N, h, w, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    L = h * w
    u = torch.randn(S, L, Di, generator=g)
    delta = torch.randn(S, K, L, Di, generator=g) * 0.5 - 1.0
    A = -torch.exp(torch.randn(K * Di, N, generator=g) * 0.3)
    B = torch.randn(S, K, N, L, generator=g)
    C = torch.randn(S, G, K, N, L, generator=g)
    D = torch.randn(K * Di, generator=g)
    bias = torch.randn(K * Di, generator=g) * 0.5
    return [t.to(DEVICE, dtype) if i in (0, 1, 3, 4) else t.to(DEVICE) for i, t in
            enumerate((u, delta, A, B, C, D, bias))]


def test_readout_of_reference_states_equals_the_reference_scan():
    """Σ_k,n C·H + Σ_k D·u over the stored states is the cross-scan's merged output, for every content."""
    from mambast_kernels.scan_ref import cross_scan_ref
    from mambast_kernels.style_states import states_readout_ref, style_states_ref

    u, delta, A, B, C, D, bias = (t.double() for t in _inputs(1, 3, 6, 4, 3, 5, seed=1))
    H = style_states_ref(u, delta, A, B, bias, 3, 5)
    y = states_readout_ref(H, C, u, D)                                          # (S, G, L, Di)
    ref = cross_scan_ref(u.transpose(1, 2), delta.transpose(2, 3), A, B, C, D, bias, 3, 5)   # (S, G, Di, L)
    torch.testing.assert_close(y, ref.transpose(-1, -2), rtol=1e-10, atol=1e-10)


@needs_triton
@pytest.mark.parametrize("S,Di,N,h,w,BD", [(1, 8, 4, 3, 5, 4), (2, 12, 4, 4, 4, 8), (1, 5, 8, 2, 3, 4)])
def test_states_kernel_matches_reference(S, Di, N, h, w, BD):
    from mambast_kernels.style_states import style_states, style_states_ref

    u, delta, A, B, _, _, bias = _inputs(S, 1, Di, N, h, w, seed=2 + Di)
    ref = style_states_ref(u.double(), delta.double(), A.double(), B.double(), bias.double(), h, w)
    out = style_states(u, delta, A, B, bias, h, w, dtype=torch.float32, BD=BD)
    assert out.shape == (S, h * w, K, N, Di)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    low = style_states(u, delta, A, B, bias, h, w, dtype=torch.bfloat16, BD=BD)    # rounded once when stored
    torch.testing.assert_close(low.double(), ref, rtol=2 ** -7, atol=1e-6)


@needs_triton
@pytest.mark.parametrize("segments,h,w", [(2, 3, 5), (3, 3, 5), (4, 4, 4), (15, 3, 5), (40, 2, 3)])
def test_segmented_states_match_reference(segments, h, w):
    """Each direction's sequence scanned in parallel parts (state pass, start states, store pass) gives the same
    states as one recurrence: uneven last segments, one step a segment, and more segments asked than steps."""
    from mambast_kernels.style_states import style_states, style_states_ref

    S, Di, N = 2, 12, 4
    u, delta, A, B, _, _, bias = _inputs(S, 1, Di, N, h, w, seed=11 + segments)
    ref = style_states_ref(u.double(), delta.double(), A.double(), B.double(), bias.double(), h, w)
    out = style_states(u, delta, A, B, bias, h, w, dtype=torch.float32, BD=8, segments=segments)
    assert not out.isnan().any()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


def test_states_segments_policy(monkeypatch):
    from mambast_kernels.style_states import MIN_SEG_STEPS, states_segments

    monkeypatch.delenv("MAMBAST_STATES_SEGMENTS", raising=False)
    assert states_segments(1, 4096, 1024) == 32              # 128 one-warp programs -> 4096
    assert states_segments(1, 32400, 1024) == 32
    assert states_segments(1, 2 * MIN_SEG_STEPS, 1024) == 2  # short sequences: at least MIN_SEG_STEPS steps a part
    assert states_segments(1, 100, 1024) == 1
    assert states_segments(32, 4096, 1024) == 1              # enough programs without segments
    monkeypatch.setenv("MAMBAST_STATES_SEGMENTS", "1")
    assert states_segments(1, 32400, 1024) == 1


@needs_triton
def test_position_major_epilogue_with_skip_term():
    """`norm_gate_pm(..., skip=)` adds the (L, Di) skip term to every content's row before the LayerNorm: the same
    as adding it to y first (what `states_readout_pm` does), and the readout + skip equals the full readout."""
    from mambast_kernels.merge_norm import merge_norm_gate_ref, norm_gate_pm
    from mambast_kernels.style_states import skip_term, states_matmul, states_readout_pm, style_states_ref

    u, delta, A, B, C, D, bias = _inputs(1, 3, 8, 4, 3, 5, seed=5)
    H = style_states_ref(u, delta, A, B, bias, 3, 5)
    torch.testing.assert_close(states_matmul(H, C) + skip_term(u, D)[:, None], states_readout_pm(H, C, u, D),
                               rtol=1e-5, atol=1e-5)
    L, G, Di = 15, 3, 8
    y = states_matmul(H, C)
    zz = torch.randn(G, L, 2 * Di, device=DEVICE)
    z = zz[..., Di:]
    wt, b = torch.randn(Di, device=DEVICE), torch.randn(Di, device=DEVICE)
    full = states_readout_pm(H, C, u, D)
    ref = merge_norm_gate_ref(full.permute(1, 0, 2)[None, :, None], z, wt, b, 1e-5)
    out = norm_gate_pm(y, z, wt, b, 1e-5, skip=skip_term(u, D))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@needs_triton
def test_position_major_epilogue_matches_reference():
    from mambast_kernels.merge_norm import merge_norm_gate_ref, norm_gate_pm

    L, G, Di = 7, 3, 16
    y = torch.randn(L, G, Di, device=DEVICE) * 2 + 0.3
    zz = torch.randn(G, L, 2 * Di, device=DEVICE)
    z = zz[..., Di:]
    wt, b = torch.randn(Di, device=DEVICE), torch.randn(Di, device=DEVICE)
    ref = merge_norm_gate_ref(y.permute(1, 0, 2)[None, :, None], z, wt, b, 1e-5)     # slots (1, G, 1, L, Di)
    out = norm_gate_pm(y, z, wt, b, 1e-5)
    assert out.shape == (G, L, Di)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@needs_triton
@pytest.mark.parametrize("zdtype", [torch.float32, torch.bfloat16])
def test_decoder_scan_norm_gate_same_through_both_forms(monkeypatch, zdtype):
    """`scan_norm_gate` with G contents on one style: stored states + matmul (MAMBAST_STYLE_STATES=1) against the
    in-loop readouts (=0), and both against the reference path."""
    import mambast_kernels as mk
    from mambast_kernels.merge_norm import merge_norm_gate_ref
    from mambast_kernels.scan_ref import cross_scan_ref

    monkeypatch.setenv("MAMBAST_SCAN", "triton")
    monkeypatch.setenv("MAMBAST_SCAN_TUNE", "0")
    S, G, Di, N, h, w = 1, 3, 8, 4, 3, 5
    u, delta, A, B, C, D, bias = _inputs(S, G, Di, N, h, w, seed=7)
    zz = torch.randn(S * G, h * w, 2 * Di, device=DEVICE).to(zdtype)
    z = zz[..., Di:]
    wt, b = torch.randn(Di, device=DEVICE), torch.randn(Di, device=DEVICE)
    y = cross_scan_ref(u.transpose(1, 2).double(), delta.transpose(2, 3).double(), A.double(), B.double(),
                       C.double(), D.double(), bias.double(), h, w)                 # (S, G, Di, L)
    ref = merge_norm_gate_ref(y.transpose(-1, -2)[:, :, None].float(), z, wt, b, 1e-5)
    outs = {}
    with torch.no_grad():
        for mode in ("1", "0"):
            monkeypatch.setenv("MAMBAST_STYLE_STATES", mode)
            outs[mode] = mk.scan_norm_gate(u, delta, A, B, C, D, bias, h, w, z, wt, b, 1e-5)
    tol = 1e-4 if zdtype == torch.float32 else 3e-2
    for mode, out in outs.items():
        assert out.shape == (S * G, h * w, Di) and out.dtype == zdtype
        torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol, msg=f"MAMBAST_STYLE_STATES={mode}")


@pytest.mark.parametrize("env,S,G,L,expect", [
    (None, 1, 64, 4096, True), (None, 1, 2, 4096, True), (None, 1, 1, 4096, False), (None, 2, 64, 4096, False),
    (None, 1, 3, 32400, False), (None, 1, 4, 32400, True),        # 1080p: from 4 contents on
    (None, 1, 64, 129600, False),                       # 4K: the states would take 17 GB a layer
    ("1", 1, 2, 4096, True), ("1", 1, 1, 4096, False), ("0", 1, 64, 4096, False)])
def test_states_readout_policy(monkeypatch, env, S, G, L, expect):
    import mambast_kernels as mk

    if env is None:
        monkeypatch.delenv("MAMBAST_STYLE_STATES", raising=False)
    else:
        monkeypatch.setenv("MAMBAST_STYLE_STATES", env)
    assert mk.states_readout_wanted(S, G, L, 1024, 16, torch.bfloat16) is expect


@needs_triton
@pytest.mark.parametrize("segments", [None, "4"])
def test_model_with_stored_states_matches_reference_path(tiny_model_vs_reference, segments):
    """The whole tiny model (Triton scan, interpreter) with the decoder's stored-states form forced on equals the
    PyTorch reference path: the decoder's three layers took it (2 contents on 1 style), with the states scanned in
    one part (the default at this tiny grid) and in 4."""
    from mambast_kernels import style_states

    rel, calls = tiny_model_vs_reference({"MAMBAST_STYLE_STATES": "1", "MAMBAST_STATES_SEGMENTS": segments},
                                         style_states, "states_matmul")
    assert rel < 1e-4, rel
    assert calls == 3
