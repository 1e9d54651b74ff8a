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
def test_model_with_fused_epilogue_matches_reference_path(monkeypatch):
    """The whole tiny model through the Triton scan (interpreter) with the fused epilogue equals the PyTorch path."""
    from mambast_cli.model import MambaST, tiny_config
    from mambast_kernels import merge_norm

    calls = []
    real = merge_norm.merge_norm_gate
    monkeypatch.setattr(merge_norm, "merge_norm_gate", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    model = MambaST(tiny_config()).eval().to(DEVICE)
    c, s = torch.rand(2, 3, 24, 40, device=DEVICE), torch.rand(1, 3, 32, 32, device=DEVICE)
    with torch.no_grad():
        monkeypatch.setenv("MAMBAST_SCAN", "ref")
        ref = model(c, s, seed=3)
        monkeypatch.setenv("MAMBAST_SCAN", "triton")
        monkeypatch.delenv("MAMBAST_FUSED_MERGE", raising=False)   # on by default
        fused = model(c, s, seed=3)
    rel = ((fused - ref).norm() / ref.norm()).item()
    assert rel < 1e-4, rel
    assert len(calls) == 9          # every SS2D block took it: content and style encoders, decoder (3 layers each)


@pytest.mark.parametrize("value,on", [(None, True), ("1", True), ("0", False)])
def test_fused_epilogue_is_on_by_default_and_env_turns_it_off(monkeypatch, value, on):
    from mambast_kernels import fused_merge_enabled

    if value is None:
        monkeypatch.delenv("MAMBAST_FUSED_MERGE", raising=False)
    else:
        monkeypatch.setenv("MAMBAST_FUSED_MERGE", value)
    assert fused_merge_enabled() is on
