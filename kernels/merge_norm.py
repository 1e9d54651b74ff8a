"""Fused epilogue of an SS2D block: merge the four scan directions, LayerNorm, SiLU gate, cast (Triton + reference).

After the cross-scan every SS2D block does (mambast_cli/model/mambast.py, `_scan_and_merge`):

    y   = sum_k slots[:, :, k]                  four direction slots (S, G, K, L, Di) fp32 or bf16 -> (S*G, L, Di) fp32
    out = LayerNorm(y) * silu(z)                 z: the block's gate branch (B, L, Di), B = S*G
    out -> out_proj (bf16 under autocast)

In PyTorch that is five passes over (B, L, Di) tensors (slot sum, LayerNorm, SiLU, product, cast: ~52 bytes moved
per element); the profile of the engine puts this group at about a third of the GPU time at 512²
(BENCHMARKS.md, session 2). `merge_norm_gate` does it in one pass: reads the 4 fp32 slots and z, writes the result
in the output dtype (~20 bytes per element). One program per token row; the direction sum runs in the fixed order
k = 0, 1, 2, 3 and the LayerNorm statistics in fp32.

Status: on by default for inference on the Triton path (env MAMBAST_FUSED_MERGE=0 turns it off). H100, session 3
(`kernels/bench.py --only "merge norm"`): 0.229 ms vs 0.642 ms for the PyTorch ops at 512² B8 (2.8x, 2.93 TB/s, the
copy ceiling is 3.0 TB/s); the engine at 512² goes from 4.62 to 4.24 ms per image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


def merge_norm_gate_ref(slots: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                        eps: float, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Reference: slots (S, G, K, L, Di) fp32, z (B, ..., Di) holding B = S*G rows of L tokens (any strides) ->
    (B, L, Di) in out_dtype (default z's dtype): LayerNorm(sum over K) * silu(z), statistics in fp32."""
    S, G, K, L, Di = slots.shape
    z = z.reshape(S * G, L, Di)
    y = slots.float().sum(dim=2).reshape(S * G, L, Di)
    y = F.layer_norm(y, (Di,), weight.float(), bias.float(), eps)
    out = y * F.silu(z.float())
    return out.to(out_dtype or z.dtype)


@triton.jit
def _layer_norm_row(t, mask, w_ptr, b_ptr, offs, C, eps):
    # LayerNorm of one row t (fp32, masked lanes hold 0) over its C valid values: statistics in fp32, then the affine
    # weight and bias (shared with residual_norm.py)
    mean = tl.sum(t, axis=0) / C
    d = tl.where(mask, t - mean, 0.0)
    var = tl.sum(d * d, axis=0) / C
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    return d * tl.rsqrt(var + eps) * w + b


@triton.jit
def _merge_norm_gate_kernel(slots_ptr, z_ptr, w_ptr, b_ptr, out_ptr, skip_ptr,
                            L, Di, z_stride_row, eps, stride_sg, stride_t, stride_k,
                            K: tl.constexpr, BLOCK_D: tl.constexpr, SKIP: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)          # token row r = (s*G + g) * L + t
    sg = row // L
    t = row % L
    offs = tl.arange(0, BLOCK_D)
    mask = offs < Di
    base = slots_ptr + sg * stride_sg + t * stride_t
    y = tl.load(base + offs, mask=mask, other=0.0).to(tl.float32)       # slots: fp32 or bf16, summed in fp32
    for k in tl.static_range(1, K):              # fixed order: deterministic
        y += tl.load(base + k * stride_k + offs, mask=mask, other=0.0).to(tl.float32)
    if SKIP:                                     # a term shared by the G rows of token t: skip (L, Di) fp32
        y += tl.load(skip_ptr + t * Di + offs, mask=mask, other=0.0)
    yn = _layer_norm_row(y, mask, w_ptr, b_ptr, offs, Di, eps)
    zz = tl.load(z_ptr + row * z_stride_row + offs, mask=mask, other=0.0).to(tl.float32)
    out = yn * (zz / (1.0 + tl.exp(-zz)))
    tl.store(out_ptr + row * Di + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def _epilogue(y: torch.Tensor, K: int, rows: int, L: int, Di: int, strides: tuple[int, int, int], z: torch.Tensor,
              weight: torch.Tensor, bias: torch.Tensor, eps: float, out_dtype: torch.dtype | None,
              skip: torch.Tensor | None = None) -> torch.Tensor:
    """Launch the fused kernel over `rows` = B*L token rows of contiguous y, whose K slots of row (b, t) start at
    b*strides[0] + t*strides[1] + k*strides[2] -> (B*L, Di). z may be a strided view as long as each token's Di
    values are contiguous (in_proj's half: rows 2*Di apart); it is copied otherwise. skip (L, Di), if given, is
    added to every row of token t before the LayerNorm (in fp32)."""
    z2 = z.reshape(rows, Di)
    if z2.stride(-1) != 1:
        z2 = z2.contiguous()
    out = torch.empty((rows, Di), device=y.device, dtype=out_dtype or z.dtype)
    BLOCK_D = triton.next_power_of_2(Di)
    nw = 4 if BLOCK_D <= 1024 else 8
    sk = y if skip is None else skip.float().contiguous()
    assert skip is None or sk.shape == (L, Di), (sk.shape, L, Di)
    _merge_norm_gate_kernel[(rows,)](y, z2, weight.contiguous(), bias.contiguous(), out, sk, L, Di, z2.stride(0),
                                     float(eps), *strides, K=K, BLOCK_D=BLOCK_D, SKIP=skip is not None,
                                     num_warps=nw)
    return out


def merge_norm_gate(slots: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                    out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Fused `merge_norm_gate_ref` (same arguments and result). z may be a strided view (e.g. one half of in_proj's
    output) as long as each token's Di values are contiguous."""
    S, G, K, L, Di = slots.shape
    B = S * G
    assert z.shape[0] == B and z.shape[-1] == Di and z.numel() == B * L * Di, (z.shape, slots.shape)
    LD = L * Di
    out = _epilogue(slots.contiguous(), K, B * L, L, Di, (K * LD, Di, LD), z, weight, bias, eps, out_dtype)
    return out.view(B, L, Di)


def norm_gate_pm(y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                 out_dtype: torch.dtype | None = None, skip: torch.Tensor | None = None) -> torch.Tensor:
    """The same epilogue for an already merged scan output stored position-major, y (L, G, Di) (what
    `style_states.states_matmul` writes): z (G, ..., Di) holding G rows of L tokens -> (G, L, Di). skip (L, Di),
    if given, is added to y[t, g] for every g first (the readout's Σ_k D_k u, `style_states.skip_term`)."""
    L, G, Di = y.shape
    assert z.shape[0] == G and z.shape[-1] == Di and z.numel() == G * L * Di, (z.shape, y.shape)
    out = _epilogue(y.contiguous(), 1, G * L, L, Di, (Di, G * Di, 0), z, weight, bias, eps, out_dtype, skip)
    return out.view(G, L, Di)
