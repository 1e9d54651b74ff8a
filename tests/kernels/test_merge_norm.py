"""Fused direction merge + LayerNorm + SiLU gate vs its PyTorch reference (Triton interpreter on CPU)."""
from __future__ import annotations

import os

import pytest
import torch

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
needs_triton = pytest.mark.skipif(not (_INTERPRET or torch.cuda.is_available()),
                                  reason="needs CUDA or TRITON_INTERPRET=1 (set before import)")
DEVICE = "cuda" if (torch.cuda.is_available() and not _INTERPRET) else "cpu"


@needs_triton
@pytest.mark.parametrize("S,G,L,Di,zdtype", [(2, 1, 15, 12, torch.float32), (1, 3, 6, 16, torch.float32),
                                            (2, 2, 7, 24, torch.bfloat16)])
def test_fused_matches_reference(S, G, L, Di, zdtype):
    from mambast_kernels.merge_norm import merge_norm_gate, merge_norm_gate_ref

    slots = torch.randn(S, G, 4, L, Di, device=DEVICE) * 3 + 0.5
    zz = torch.randn(S * G, 1, L, 2 * Di, device=DEVICE).to(zdtype)
    z = zz[..., Di:]                                   # a strided half, as in_proj(x).chunk(2, -1) gives
    w, b = torch.randn(Di, device=DEVICE), torch.randn(Di, device=DEVICE)
    ref = merge_norm_gate_ref(slots, z, w, b, 1e-5)
    out = merge_norm_gate(slots, z, w, b, 1e-5)
    assert out.shape == (S * G, L, Di) and out.dtype == zdtype
    tol = 1e-5 if zdtype == torch.float32 else 1e-2
    assert torch.allclose(out.float(), ref.float(), rtol=tol, atol=tol)
    assert torch.equal(out, merge_norm_gate(slots, z, w, b, 1e-5))        # deterministic


@needs_triton
def test_model_with_fused_epilogue_matches_reference_path(tiny_model_vs_reference):
    """The whole tiny model through the Triton scan (interpreter) with the fused epilogue equals the PyTorch path."""
    from mambast_kernels import merge_norm

    # the fused epilogue is on by default; the decoder keeps its in-loop form (2 contents on a style take the stored
    # states by default; that form's own model test is in test_style_states.py)
    rel, calls = tiny_model_vs_reference({"MAMBAST_FUSED_MERGE": None, "MAMBAST_STYLE_STATES": "0"},
                                         merge_norm, "merge_norm_gate")
    assert rel < 1e-4, rel
    assert calls == 9          # every SS2D block took it: content and style encoders, decoder (3 layers each)


@pytest.mark.parametrize("value,on", [(None, True), ("1", True), ("0", False)])
def test_fused_epilogue_is_on_by_default_and_env_turns_it_off(monkeypatch, value, on):
    from mambast_kernels import fused_merge_enabled

    if value is None:
        monkeypatch.delenv("MAMBAST_FUSED_MERGE", raising=False)
    else:
        monkeypatch.setenv("MAMBAST_FUSED_MERGE", value)
    assert fused_merge_enabled() is on


@needs_triton
def test_bf16_slots_epilogue_reads_them_in_fp32():
    """bf16 direction slots (the default for a bf16 result) are summed in fp32: the result equals the reference
    given the same rounded slots, and stays within bf16 rounding of the fp32-slot result."""
    from mambast_kernels.merge_norm import merge_norm_gate, merge_norm_gate_ref

    slots = torch.randn(2, 1, 4, 9, 16, device=DEVICE) * 3 + 0.5
    zz = torch.randn(2, 1, 9, 32, device=DEVICE).to(torch.bfloat16)
    z = zz[..., 16:]
    w, b = torch.randn(16, device=DEVICE), torch.randn(16, device=DEVICE)
    low = slots.to(torch.bfloat16)
    out = merge_norm_gate(low, z, w, b, 1e-5)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), merge_norm_gate_ref(low, z, w, b, 1e-5).float(), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(out.float(), merge_norm_gate(slots, z, w, b, 1e-5).float(), rtol=3e-2, atol=3e-2)


@needs_triton
def test_scan_writes_bf16_slots_only_when_asked(monkeypatch):
    """`slot_dtype_for`: bf16 slots for a bf16 result unless MAMBAST_SCAN_SLOTS=fp32, fp32 for an fp32 result. The
    scan then stores its fp32 outputs rounded once (compared with the fp32 slots of the same call)."""
    from mambast_kernels import cross_scan_v2 as cs2
    monkeypatch.setenv("MAMBAST_SCAN_SLOTS", "fp32")
    assert cs2.slot_dtype_for(torch.bfloat16) == torch.float32
    monkeypatch.delenv("MAMBAST_SCAN_SLOTS")
    assert cs2.slot_dtype_for(torch.bfloat16) == torch.bfloat16 and cs2.slot_dtype_for(torch.float32) == torch.float32
    S, Di, N, L, h, w = 2, 8, 4, 15, 3, 5
    g = torch.Generator().manual_seed(1)
    u = torch.randn(S, L, Di, generator=g)
    delta = torch.randn(S, 4, L, Di, generator=g) * 0.5 - 1.0
    A = -torch.exp(torch.randn(4 * Di, N, generator=g) * 0.1)
    B = torch.randn(S, 4, N, L, generator=g)
    C = torch.randn(S, 1, 4, N, L, generator=g)
    D, bias = torch.randn(4 * Di, generator=g), torch.randn(4 * Di, generator=g) * 0.5
    args = [t.to(DEVICE) for t in (u, delta, A, B, C, D, bias)]
    cfg = (8, 1)
    full, _, _ = cs2.cross_scan_fwd_cl(*args, h, w, config=cfg, merge=False)
    low, _, _ = cs2.cross_scan_fwd_cl(*args, h, w, config=cfg, merge=False, slot_dtype=torch.bfloat16)
    assert full.dtype == torch.float32 and low.dtype == torch.bfloat16 and low.shape == full.shape
    torch.testing.assert_close(low.float(), full, rtol=2 ** -7, atol=1e-6)
    merged, _, _ = cs2.cross_scan_fwd_cl(*args, h, w, config=cfg, slot_dtype=torch.bfloat16)   # merge: always fp32
    assert merged.dtype == torch.float32
