"""Fused LayerNorms around a VSS block's residual stream (Triton + reference).

Every VSS block of the model (mambast_cli/model/mambast.py, `VSSBlock`) does, on the (B, h, w, C) token grid:

    a   = LN_1(x)                         -> in_proj (a matmul: bf16 under autocast)
    y   = SS2D(a)                            bf16 (out_proj's output)
    out = LN_norm(skip * x + y) + x          fp32 residual stream

Under CUDA autocast, LayerNorm runs and returns fp32, so in PyTorch that is: LN_1 (read 4, write 4 bytes per
element), the cast before in_proj (4 + 2), the skip product (4 + 4), the sum with y (4 + 2 + 4), LN_norm (4 + 4) and
the residual add (4 + 4 + 4): ~52 bytes moved per element in seven passes. Two kernels here do it in two passes:

- `norm_cast`: LN_1 with its result written straight in the matmul's dtype (4 + 2 bytes);
- `add_norm_residual`: skip ⊙ x + y, LayerNorm, + residual, in one pass (4 + 2 + 4 bytes; 4 more when the
  residual is another tensor, as with CAPE).

One program per token row, statistics in fp32; the values equal the PyTorch ops' up to the order of the mean and
variance sums (not bit-identical). `mambast_kernels.block_norm` / `block_residual` pick them for CUDA inference
(env MAMBAST_FUSED_BLOCK=0 turns them off).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .merge_norm import _layer_norm_row


def norm_cast_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                  out_dtype: torch.dtype) -> torch.Tensor:
    """Reference: LayerNorm over the last dim in fp32, result cast to out_dtype."""
    return F.layer_norm(x.float(), (x.shape[-1],), weight.float(), bias.float(), eps).to(out_dtype)


def add_norm_residual_ref(x: torch.Tensor, y: torch.Tensor, skip: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor, eps: float, res: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: LayerNorm(skip * x + y) + res (res defaults to x), all in fp32; returns fp32."""
    t = skip.float() * x.float() + y.float()
    out = F.layer_norm(t, (t.shape[-1],), weight.float(), bias.float(), eps)
    return out + (x if res is None else res).float()


@triton.jit
def _row_norm_kernel(x_ptr, y_ptr, r_ptr, s_ptr, w_ptr, b_ptr, out_ptr, C, eps,
                     RESIDUAL: tl.constexpr, SEPARATE_RES: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_C)
    mask = offs < C
    x = tl.load(x_ptr + row * C + offs, mask=mask, other=0.0).to(tl.float32)
    if RESIDUAL:
        s = tl.load(s_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + row * C + offs, mask=mask, other=0.0).to(tl.float32)
        t = s * x + y
    else:
        t = x
    out = _layer_norm_row(t, mask, w_ptr, b_ptr, offs, C, eps)
    if RESIDUAL:
        if SEPARATE_RES:
            out += tl.load(r_ptr + row * C + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            out += x
    tl.store(out_ptr + row * C + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def _launch(x: torch.Tensor, y: torch.Tensor | None, res: torch.Tensor | None, skip: torch.Tensor | None,
            weight: torch.Tensor, bias: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    C = x.shape[-1]
    x = x.contiguous()
    rows = x.numel() // C
    out = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    BLOCK_C = triton.next_power_of_2(C)
    nw = 4 if BLOCK_C <= 1024 else 8
    y_ = x if y is None else y.contiguous()
    r_ = x if res is None else res.contiguous()
    s_ = weight if skip is None else skip.contiguous()
    _row_norm_kernel[(rows,)](x, y_, r_, s_, weight.contiguous(), bias.contiguous(), out, C, float(eps),
                              RESIDUAL=y is not None, SEPARATE_RES=res is not None, BLOCK_C=BLOCK_C, num_warps=nw)
    return out


def norm_cast(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
              out_dtype: torch.dtype) -> torch.Tensor:
    """Fused `norm_cast_ref` (same arguments and result up to summation order)."""
    return _launch(x, None, None, None, weight, bias, eps, out_dtype)


def add_norm_residual(x: torch.Tensor, y: torch.Tensor, skip: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor, eps: float, res: torch.Tensor | None = None) -> torch.Tensor:
    """Fused `add_norm_residual_ref` (same arguments and result up to summation order); x, y, res of one shape."""
    assert y.shape == x.shape and (res is None or res.shape == x.shape), (x.shape, y.shape)
    return _launch(x, y, res, skip, weight, bias, eps, torch.float32)
