"""The fused VSS-block kernels vs their PyTorch references (Triton interpreter on CPU): the LayerNorms around the
residual stream (`kernels/residual_norm.py`), the depthwise conv + SiLU (`kernels/dwconv_silu.py`), and the whole tiny
model with them on and off."""
from __future__ import annotations

import os

import pytest
import torch

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
needs_triton = pytest.mark.skipif(not (_INTERPRET or torch.cuda.is_available()),
                                  reason="needs CUDA or TRITON_INTERPRET=1 (set before import)")
DEVICE = "cuda" if (torch.cuda.is_available() and not _INTERPRET) else "cpu"


@needs_triton
@pytest.mark.parametrize("shape,ydtype,separate", [((2, 3, 5, 16), torch.float32, False),
                                                  ((1, 4, 4, 24), torch.bfloat16, False),    # C not a power of 2
                                                  ((2, 2, 3, 12), torch.bfloat16, True)])     # CAPE: res != x
def test_add_norm_residual_matches_reference(shape, ydtype, separate):
    from mambast_kernels.residual_norm import add_norm_residual, add_norm_residual_ref

    C = shape[-1]
    x = torch.randn(shape, device=DEVICE) * 2 + 0.3
    y = torch.randn(shape, device=DEVICE).to(ydtype)
    res = torch.randn(shape, device=DEVICE) if separate else None
    skip, w, b = torch.randn(C, device=DEVICE), torch.randn(C, device=DEVICE), torch.randn(C, device=DEVICE)
    out = torch.full(shape, float("nan"), device=DEVICE)
    out = add_norm_residual(x, y, skip, w, b, 1e-5, res=res)
    ref = add_norm_residual_ref(x, y, skip, w, b, 1e-5, res=res)
    assert out.dtype == torch.float32 and out.shape == x.shape and not out.isnan().any()
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(out, add_norm_residual(x, y, skip, w, b, 1e-5, res=res))       # deterministic


@needs_triton
@pytest.mark.parametrize("C,out_dtype", [(16, torch.bfloat16), (20, torch.float32)])
def test_norm_cast_matches_reference(C, out_dtype):
    from mambast_kernels.residual_norm import norm_cast, norm_cast_ref

    x = torch.randn(3, 7, C, device=DEVICE) * 4 - 1
    w, b = torch.randn(C, device=DEVICE), torch.randn(C, device=DEVICE)
    out, ref = norm_cast(x, w, b, 1e-5, out_dtype), norm_cast_ref(x, w, b, 1e-5, out_dtype)
    assert out.dtype == out_dtype and out.shape == x.shape
    tol = 1e-5 if out_dtype == torch.float32 else 1e-2
    assert torch.allclose(out.float(), ref.float(), rtol=tol, atol=tol)


@needs_triton
@pytest.mark.parametrize("autocast", [False, True])
def test_model_with_fused_block_norms_matches_unfused(monkeypatch, autocast):
    """The tiny model with the fused block kernels (interpreter) equals it without them; every VSS block (3 content + 3 style encoder blocks, 3 decoder blocks) takes both kernels."""
    from mambast_cli.model import MambaST, tiny_config
    from mambast_kernels import residual_norm

    from mambast_kernels import dwconv_silu

    calls = {"norm": 0, "res": 0, "conv": 0}
    real_n, real_r, real_c = residual_norm.norm_cast, residual_norm.add_norm_residual, dwconv_silu.dwconv_silu
    monkeypatch.setattr(dwconv_silu, "dwconv_silu", lambda *a, **k: calls.__setitem__("conv", calls["conv"] + 1)
                        or real_c(*a, **k))
    monkeypatch.setattr(residual_norm, "norm_cast", lambda *a, **k: calls.__setitem__("norm", calls["norm"] + 1)
                        or real_n(*a, **k))
    monkeypatch.setattr(residual_norm, "add_norm_residual",
                        lambda *a, **k: calls.__setitem__("res", calls["res"] + 1) or real_r(*a, **k))
    torch.manual_seed(0)
    model = MambaST(tiny_config()).eval().to(DEVICE)
    c, s = torch.rand(2, 3, 24, 40, device=DEVICE), torch.rand(1, 3, 32, 32, device=DEVICE)
    # the fused norms are taken wherever the Triton scan would run; here the scan itself stays the fast reference
    import mambast_kernels

    monkeypatch.setattr(mambast_kernels, "_fuse_block",
                        lambda x: mambast_kernels.fused_block_enabled() and not torch.is_grad_enabled())
    outs = {}
    for fused in ("0", "1"):
        monkeypatch.setenv("MAMBAST_FUSED_BLOCK", fused)      # off: every fused kernel of the block is off
        with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=autocast):
            outs[fused] = model(c, s, seed=3).float()
    rel = ((outs["1"] - outs["0"]).norm() / outs["0"].norm()).item()
    assert rel < (2e-2 if autocast else 1e-5), rel
    # 9 blocks; the decoder's convolutions run on both sides (3 style-side + 3 content-side calls)
    assert calls == {"norm": 9, "res": 9, "conv": 12}


def test_training_keeps_the_pytorch_ops(monkeypatch):
    """With gradients (training) the fused kernels are never used: they have no backward."""
    from mambast_kernels import block_norm, block_residual

    monkeypatch.setenv("MAMBAST_SCAN", "triton")
    ln = torch.nn.LayerNorm(8)
    x = torch.randn(2, 3, 8, requires_grad=True)
    y = block_residual(x, block_norm(x, ln), torch.ones(8), ln)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@needs_triton
@pytest.mark.parametrize("B,h,w,Di,dtype", [(2, 3, 5, 16, torch.float32), (1, 4, 4, 72, torch.bfloat16),
                                            (2, 1, 7, 8, torch.float32), (1, 9, 2, 24, torch.bfloat16)])
def test_dwconv_silu_matches_reference_and_conv2d(B, h, w, Di, dtype):
    """Strided input (one half of a wider tensor, as in_proj's chunk gives), odd grids, channel tails; equals the
    model's PyTorch ops (copy to channels_last, nn.Conv2d, SiLU)."""
    from mambast_kernels.dwconv_silu import dwconv_silu, dwconv_silu_ref

    xx = (torch.randn(B, h, w, 2 * Di, device=DEVICE) * 2).to(dtype)
    x = xx[..., :Di]
    conv = torch.nn.Conv2d(Di, Di, 3, padding=1, groups=Di, device=DEVICE)
    out = dwconv_silu(x, conv.weight.detach(), conv.bias.detach())
    ref = dwconv_silu_ref(x, conv.weight.detach(), conv.bias.detach())
    assert out.shape == (B, h * w, Di) and out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(out.float(), ref.float(), rtol=tol, atol=tol)
    if dtype == torch.float32:
        with torch.no_grad():
            plain = torch.nn.functional.silu(conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1).reshape(B, h * w, Di)
        assert torch.allclose(out, plain, rtol=1e-5, atol=1e-5)
