"""Channels-last reflection padding for the CNN decoder, with the ReLU and the ×2 nearest upsampling fused in
(Triton + reference).

The CNN decoder (spec §2.11) is a chain of `ReflectionPad2d(1) → Conv2d 3×3 → ReLU [→ Upsample ×2 nearest]`. Run in
NCHW with bf16 weights, cuDNN picks NHWC kernels and transposes every input and output (`nchwToNhwc`, most of the
"copies" group in the engine profile), and the pad, the ReLU and the upsampling are three more passes over the
largest tensors of the model (BENCHMARKS.md, session 3: padding alone is 12 % of the GPU time at 512²). PyTorch's
channels-last path was measured slower still, because its reflection pad is not channels-last.

`pad_relu_up(x, relu, scale, bias)` does the glue between two convolutions in one pass: it reads the previous conv's
output (B, C, H, W) in any memory format (channels-last in practice), adds that conv's bias, applies ReLU, upsamples
by `scale` (nearest) and reflect-pads by one pixel, and writes a channels-last (B, C, s·H + 2, s·W + 2) tensor that
the next conv reads with `padding=0`. Each output element is a copy of one input element (or its ReLU), so the
result is bit-identical to the PyTorch ops; the kernel moves 1 read + (1 + ε)·s² writes per input element instead of
about 2 + 3·s².

One program writes BLOCK_W pixels × BLOCK_C channels of one output row; the reflected source row and columns are
integer arithmetic, so nothing is materialised in between.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

__all__ = ["pad_relu_up", "pad_relu_up_ref"]


def pad_relu_up_ref(x: torch.Tensor, relu: bool = False, scale: int = 1,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: reflect-pad 1 of nearest-upsample(ReLU(x + bias), scale); (B, C, s·H + 2, s·W + 2), channels-last.
    bias: (C,) or None, added in x's dtype the way PyTorch adds a convolution's bias after cuDNN."""
    if bias is not None:
        x = x + bias.to(x.dtype).view(1, -1, 1, 1)
    if relu:
        x = F.relu(x)
    if scale != 1:
        x = F.interpolate(x, scale_factor=scale, mode="nearest")
    return F.pad(x, (1, 1, 1, 1), mode="reflect").contiguous(memory_format=torch.channels_last)


@triton.jit
def _pad_relu_up_kernel(x_ptr, b_ptr, out_ptr, Hp, Wp, Ho, Wo, C,
                        sxb, sxh, sxw, sxc,
                        SCALE: tl.constexpr, RELU: tl.constexpr, BIAS: tl.constexpr,
                        BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0)                 # b * Hp + oy
    b = row // Hp
    oy = row % Hp
    # source row in the upsampled (Ho = SCALE·H) grid, reflected at both ends, then in the input grid
    y = oy - 1
    y = tl.where(y < 0, -y, y)
    y = tl.where(y >= Ho, 2 * Ho - 2 - y, y)
    iy = y // SCALE
    ox = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    xx = ox - 1
    xx = tl.where(xx < 0, -xx, xx)
    xx = tl.where(xx >= Wo, 2 * Wo - 2 - xx, xx)
    ix = xx // SCALE
    mask = (ox < Wp)[:, None] & (c < C)[None, :]
    src = (x_ptr + b.to(tl.int64) * sxb + iy.to(tl.int64) * sxh
           + ix.to(tl.int64)[:, None] * sxw + c.to(tl.int64)[None, :] * sxc)
    v = tl.load(src, mask=mask, other=0.0)
    if BIAS:    # in fp32, rounded once to x's dtype: what PyTorch's separate add does
        bv = tl.load(b_ptr + c, mask=c < C, other=0.0)
        v = (v.to(tl.float32) + bv.to(tl.float32)[None, :]).to(v.dtype)
    if RELU:    # compared in fp32: the interpreter compares bf16 as raw bits (same result on the GPU)
        v = tl.where(v.to(tl.float32) > 0, v, tl.zeros_like(v))
    dst = out_ptr + row.to(tl.int64) * Wp * C + ox.to(tl.int64)[:, None] * C + c[None, :]
    tl.store(dst, v, mask=mask)


def pad_relu_up(x: torch.Tensor, relu: bool = False, scale: int = 1,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """Fused `pad_relu_up_ref` (same arguments, bit-identical result). x: (B, C, H, W), any strides, with
    scale·H ≥ 2 and scale·W ≥ 2 (a reflection pad of 1 needs two pixels). bias: the previous convolution's (C,)
    bias, so that the convolution can run without it: PyTorch adds a cuDNN convolution's bias in a separate pass
    over the whole output (10 such passes were 7 % of the engine's GPU time at 512², session 8's profile)."""
    B, C, H, W = x.shape
    Ho, Wo = H * scale, W * scale
    if Ho < 2 or Wo < 2:
        raise ValueError(f"reflection padding needs at least 2×2 pixels, got {Ho}×{Wo}")
    Hp, Wp = Ho + 2, Wo + 2
    out = torch.empty((B, C, Hp, Wp), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    BLOCK_C = min(128, triton.next_power_of_2(C))
    BLOCK_W = max(1, 4096 // BLOCK_C)
    BLOCK_W = min(BLOCK_W, triton.next_power_of_2(Wp))
    grid = (B * Hp, triton.cdiv(Wp, BLOCK_W), triton.cdiv(C, BLOCK_C))
    sb, sc, sh, sw = x.stride()
    if bias is not None and bias.shape != (C,):
        raise ValueError(f"bias of shape {tuple(bias.shape)} for {C} channels")
    b = bias.contiguous() if bias is not None else x    # any pointer when there is no bias (never read)
    _pad_relu_up_kernel[grid](x, b, out, Hp, Wp, Ho, Wo, C, sb, sh, sw, sc,
                              SCALE=scale, RELU=bool(relu), BIAS=bias is not None,
                              BLOCK_W=BLOCK_W, BLOCK_C=BLOCK_C, num_warps=4)
    return out
