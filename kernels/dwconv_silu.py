"""Fused depthwise 3×3 convolution + bias + SiLU on a channel-last token grid (Triton + reference).

Every SS2D block (mambast_cli/model/mambast.py, `SS2D._conv`) runs its scan input through

    u = SiLU(DepthwiseConv3x3(xs) + bias)        xs: (B, h, w, Di), one half of in_proj's output (a strided view)

In PyTorch that is a copy of the strided half into a channels-last tensor (read 2 + write 2 bytes per element in
bf16), the cuDNN depthwise convolution (2 + 2) and the SiLU (2 + 2): three passes, ~12 bytes per element. Here it is
one pass that reads the strided half where it lies and writes the (B, h·w, Di) result: ~4 bytes per element (each
input is read by 9 neighbours, from cache). Zero padding of 1, as `nn.Conv2d(Di, Di, 3, padding=1, groups=Di)`.

Products are summed in fp32 in the fixed tap order (-1,-1), (-1,0), ... (1,1); weights and bias are rounded to the
input's dtype first (as autocast does for the convolution), so results match cuDNN's up to summation order and the
one bf16 rounding cuDNN does between the convolution and the SiLU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


def dwconv_silu_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                    out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Reference: x (B, h, w, Di) any strides, weight (Di, 1, 3, 3), bias (Di,) -> (B, h*w, Di) in out_dtype
    (default x's dtype), computed in fp32 with weight and bias rounded to x's dtype."""
    B, h, w, Di = x.shape
    wt, bs = weight.to(x.dtype).float(), bias.to(x.dtype).float()
    y = F.conv2d(x.float().permute(0, 3, 1, 2), wt, bs, padding=1, groups=Di)
    return F.silu(y).permute(0, 2, 3, 1).reshape(B, h * w, Di).to(out_dtype or x.dtype)


@triton.jit
def _dwconv_silu_kernel(x_ptr, w_ptr, b_ptr, out_ptr, h, w, Di, sx_b, sx_h, sx_w,
                        BT: tl.constexpr, BD: tl.constexpr):
    pid_t = tl.program_id(0)
    pid_d = tl.program_id(1)
    L = h * w
    n_t = tl.cdiv(L, BT)
    b = (pid_t // n_t).to(tl.int64)
    t = (pid_t % n_t) * BT + tl.arange(0, BT)                  # (BT,) token indices in row-major grid order
    c = pid_d * BD + tl.arange(0, BD)                          # (BD,) channels
    t_ok = t < L
    c_ok = c < Di
    i = t // w
    j = t % w
    acc = tl.zeros((BT, BD), dtype=tl.float32)
    base = x_ptr + b * sx_b
    for tap in tl.static_range(9):
        di = tap // 3 - 1
        dj = tap % 3 - 1
        ii = i + di
        jj = j + dj
        ok = t_ok & (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
        ptrs = base + (ii[:, None] * sx_h + jj[:, None] * sx_w + c[None, :])     # int32 within one picture
        xv = tl.load(ptrs, mask=ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
        wv = tl.load(w_ptr + c * 9 + tap, mask=c_ok, other=0.0).to(x_ptr.dtype.element_ty).to(tl.float32)
        acc += xv * wv[None, :]
    bv = tl.load(b_ptr + c, mask=c_ok, other=0.0).to(x_ptr.dtype.element_ty).to(tl.float32)
    acc += bv[None, :]
    y = acc / (1.0 + tl.exp(-acc))
    optrs = out_ptr + (b * L + t[:, None].to(tl.int64)) * Di + c[None, :]
    tl.store(optrs, y.to(out_ptr.dtype.element_ty), mask=t_ok[:, None] & c_ok[None, :])


def dwconv_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Fused `dwconv_silu_ref` (same arguments and result up to summation order). x may be strided as long as its
    channels are contiguous (one half of in_proj's output is)."""
    B, h, w, Di = x.shape
    assert tuple(weight.shape) == (Di, 1, 3, 3) and tuple(bias.shape) == (Di,), (weight.shape, bias.shape)
    if x.stride(-1) != 1:
        x = x.contiguous()
    if not fits(x):
        raise ValueError(f"one picture of {tuple(x.shape)} spans 2**31 elements or more (the kernel's 32-bit offsets)")
    out = torch.empty((B, h * w, Di), device=x.device, dtype=out_dtype or x.dtype)
    # (32 tokens × 64 channels, 8 warps): 123 registers on sm_90a, no spills; each thread issues its 9 × 8 loads
    # before the FMAs (cross-compiled here; not yet timed on a GPU)
    BT, BD = 32, 64
    grid = (B * triton.cdiv(h * w, BT), triton.cdiv(Di, BD))
    _dwconv_silu_kernel[grid](x, weight.contiguous(), bias.contiguous(), out, h, w, Di,
                              x.stride(0), x.stride(1), x.stride(2), BT=BT, BD=BD, num_warps=8)
    return out


def fits(x: torch.Tensor) -> bool:
    """Whether one picture of x (B, h, w, Di) is addressable with the kernel's 32-bit offsets (batch offsets are
    64-bit): h·w·Di elements per picture up to ~2·10⁹ (8K frames at the model's width fit)."""
    _, h, w, Di = x.shape
    return (h - 1) * x.stride(1) + (w - 1) * x.stride(2) + Di < 2 ** 31
