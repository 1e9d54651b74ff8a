"""mambast_kernels: selective-scan kernels for Mamba-ST, each beside its PyTorch reference.

`cross_scan` is the one dispatch point for the scan: it picks the Triton kernel for CUDA tensors when Triton is
importable (and `MAMBAST_SCAN=ref` is not set), and the PyTorch reference otherwise, so the CPU path never needs
Triton. The model calls it through `scan_norm_gate` (scan, direction merge, LayerNorm, gate).

Also here, each beside its reference: `style_states` (the decoder's scan for many contents on one style: the
style's states stored once, the readouts as one batched matmul; `scan_norm_gate` takes it per
`states_readout_wanted`), `merge_norm` (the fused SS2D epilogue), `residual_norm` (a VSS block's LayerNorms and
residual add, via `block_norm` / `block_residual`), `dwconv_silu` (SS2D's depthwise convolution + SiLU, via
`conv_silu`) and `pad_nhwc` (the CNN decoder's ReLU + nearest upsampling + reflection pad as one channels-last
pass, used by mambast_cli/engine/cnn_nhwc.py).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .scan_ref import K_DIRECTIONS, cross_scan_ref, direction_indices

try:  # the Triton path is optional: CPU-only installs run the reference
    from .cross_scan import cross_scan_triton  # type: ignore[attr-defined]
    from .cross_scan_v2 import cross_scan_triton_v2, scan_impl  # type: ignore[attr-defined]
except Exception:  # pragma: no cover - depends on the install
    cross_scan_triton = None
    cross_scan_triton_v2 = None

__all__ = ["K_DIRECTIONS", "cross_scan", "cross_scan_ref", "cross_scan_triton", "cross_scan_triton_v2", "direction_indices",
           "backend_for", "scan_norm_gate", "fused_merge_enabled", "block_norm", "block_residual",
           "fused_block_enabled", "conv_silu", "states_readout_wanted"]


def backend_for(x: torch.Tensor) -> str:
    """Which implementation `cross_scan` would use for a tensor on this device: 'triton' or 'ref'."""
    forced = os.environ.get("MAMBAST_SCAN", "").lower()
    if forced in ("ref", "triton"):
        return forced
    if x.is_cuda and cross_scan_triton is not None:
        return "triton"
    return "ref"


def cross_scan(u, delta, A, B, C, D, delta_bias, h: int, w: int, backend: str | None = None, layout: str = "cf"):
    """4-direction selective scan, G readouts per recurrence; see `scan_ref.cross_scan_ref` for shapes.

    layout="cf" (default): u (S,Di,L), delta (S,K,Di,L) -> y (S,G,Di,L). layout="cl" (channel-last, fastest with the
    v2 kernel: no transposes): u (S,L,Di), delta (S,K,L,Di) -> y (S,G,L,Di). B, C are (S,K,N,L), (S,G,K,N,L) in both.
    The Triton kernel is v2 unless MAMBAST_SCAN_IMPL=v1 (the previous chunked kernel, kept as a fallback).
    """
    if layout not in ("cf", "cl"):
        raise ValueError(f"layout must be 'cf' or 'cl', got {layout!r}")
    backend = backend or backend_for(u)
    if backend == "triton":
        if cross_scan_triton is None:
            raise RuntimeError("Triton scan requested but mambast_kernels.cross_scan could not be imported")
        if scan_impl() == "v2":
            return cross_scan_triton_v2(u, delta, A, B, C, D, delta_bias, h, w, layout=layout)
        fn = cross_scan_triton
    else:
        fn = cross_scan_ref
    if layout == "cl":
        y = fn(u.transpose(1, 2), delta.transpose(2, 3), A, B, C, D, delta_bias, h, w)
        return y.transpose(-1, -2)
    return fn(u, delta, A, B, C, D, delta_bias, h, w)


def fused_merge_enabled() -> bool:
    """`scan_norm_gate`'s fused epilogue: on by default (2.8x faster than the PyTorch ops, 8 % off the engine's time
    at 512² on an H100, BENCHMARKS.md session 3); env MAMBAST_FUSED_MERGE=0 turns it off."""
    return os.environ.get("MAMBAST_FUSED_MERGE", "1") != "0"


def scan_norm_gate(u, delta, A, B, C, D, delta_bias, h: int, w: int, z, weight, bias, eps: float):
    """An SS2D block's scan and epilogue in one call: channel-last cross-scan (see `cross_scan`, layout="cl"), then
    LayerNorm over channels and the SiLU gate z: returns (S*G, L, Di) in z's dtype.

    Uses the fused Triton epilogue (`merge_norm.merge_norm_gate`: the four direction slots are summed inside it) when
    the v2 Triton scan runs and no gradient is needed (unless MAMBAST_FUSED_MERGE=0); otherwise the PyTorch ops."""
    if (fused_merge_enabled() and backend_for(u) == "triton" and scan_impl() == "v2"
            and not torch.is_grad_enabled()):
        from .cross_scan_v2 import cross_scan_fwd_cl, slot_dtype_for
        from .merge_norm import merge_norm_gate, norm_gate_pm

        S, G, L, Di, N = C.shape[0], C.shape[1], u.shape[1], u.shape[2], A.shape[1]
        sdtype = slot_dtype_for(z.dtype)                     # the direction slots' dtype, and the stored states'
        if states_readout_wanted(S, G, L, Di, N, sdtype):
            from .style_states import skip_term, states_matmul, style_states

            H = style_states(u, delta, A, B, delta_bias, h, w, dtype=sdtype)
            return norm_gate_pm(states_matmul(H, C), z, weight, bias, eps, out_dtype=z.dtype, skip=skip_term(u, D))
        slots, _, _ = cross_scan_fwd_cl(u, delta, A, B, C, D, delta_bias, h, w, merge=False, slot_dtype=sdtype)
        return merge_norm_gate(slots, z, weight, bias, eps, out_dtype=z.dtype)
    y = cross_scan(u, delta, A, B, C, D, delta_bias, h, w, layout="cl")        # (S, G, L, Di) fp32
    S, G, L, Di = y.shape
    y = F.layer_norm(y.reshape(S * G, L, Di).to(weight.dtype), (Di,), weight, bias, eps)
    return y * F.silu(z.reshape(S * G, L, Di))


# Below this many contents on one style the in-loop readouts (cross_scan_v2's grouped form) are kept: H200, session
# 12 (segmented states kernel): 1.82x at 512² G2, 5.3x at G4; 1080p G2 0.95x, G4 2.16x.
STATES_MIN_G = 2
STATES_MIN_G_LONG = 4          # for sequences longer than STATES_SHORT_L tokens
STATES_SHORT_L = 64 * 64
# The stored states of one decoder layer may take at most this many bytes (1080p in bf16: 4.2 GB).
STATES_MAX_BYTES = 5 << 30


def states_readout_wanted(S: int, G: int, L: int, Di: int, N: int, states_dtype: torch.dtype) -> bool:
    """Whether a decoder scan of G contents on one style runs as stored style states + one batched matmul
    (`style_states.py`) instead of G readouts inside the scan loop: env MAMBAST_STYLE_STATES=1 whenever S = 1 and
    G > 1, =0 never; by default (auto) for S = 1, G >= STATES_MIN_G (STATES_MIN_G_LONG beyond STATES_SHORT_L
    tokens) and states (stored in `states_dtype`, the direction slots' dtype) within STATES_MAX_BYTES."""
    from .style_states import states_bytes

    mode = os.environ.get("MAMBAST_STYLE_STATES", "auto")
    if mode == "0" or S != 1 or G < 2:
        return False
    if mode == "1":
        return True
    min_g = STATES_MIN_G if L <= STATES_SHORT_L else STATES_MIN_G_LONG
    return G >= min_g and states_bytes(L, Di, N, states_dtype) <= STATES_MAX_BYTES


def fused_block_enabled() -> bool:
    """`block_norm`, `block_residual` and `conv_silu` use their fused Triton kernels (`residual_norm.py`,
    `dwconv_silu.py`) for inference on the Triton backend; env MAMBAST_FUSED_BLOCK=0 turns all three off."""
    return os.environ.get("MAMBAST_FUSED_BLOCK", "1") != "0"


def _fuse_block(x: torch.Tensor) -> bool:
    return fused_block_enabled() and backend_for(x) == "triton" and not torch.is_grad_enabled()


def block_norm(x: torch.Tensor, ln: torch.nn.LayerNorm) -> torch.Tensor:
    """A VSS block's LN_1, whose result feeds a matmul. Fused path: one pass that writes the result in the autocast
    dtype when autocast is on for x's device (the cast the matmul would do), else in x's dtype."""
    if not _fuse_block(x):
        return ln(x)
    from .residual_norm import norm_cast

    return norm_cast(x, ln.weight, ln.bias, ln.eps, _matmul_dtype(x))


def _matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul or convolution on x would compute in: autocast's when it is on for x's device."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


def block_residual(x: torch.Tensor, y: torch.Tensor, skip: torch.Tensor, ln: torch.nn.LayerNorm,
                   res: torch.Tensor | None = None) -> torch.Tensor:
    """A VSS block's output: ln(skip * x + y) + res (res defaults to x), fp32 (the skip parameter is fp32, so the
    PyTorch ops promote to it). Fused path: one pass."""
    if not (_fuse_block(x) and skip.dtype == torch.float32):
        return ln(skip * x + y) + (x if res is None else res)
    from .residual_norm import add_norm_residual

    return add_norm_residual(x, y, skip, ln.weight, ln.bias, ln.eps, res=res)


def conv_silu(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """SS2D's SiLU(depthwise conv(x)): x (B, h, w, Di) channel-last (may be strided) -> (B, h*w, Di). Fused path
    (`dwconv_silu.py`, one pass, result in the autocast dtype when autocast is on) for inference on the Triton backend
    with a 3×3, padding 1 convolution; env MAMBAST_FUSED_CONV=0 turns it off."""
    if (_fuse_block(x) and os.environ.get("MAMBAST_FUSED_CONV", "1") != "0" and conv.kernel_size == (3, 3)
            and conv.padding == (1, 1) and conv.groups == x.shape[-1] and conv.bias is not None):
        from .dwconv_silu import dwconv_silu, fits

        if fits(x):
            return dwconv_silu(x, conv.weight, conv.bias, out_dtype=_matmul_dtype(x))
    return _conv_silu_torch(x, conv)


def _conv_silu_torch(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    Bsz, h, w, Di = x.shape
    xc = x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)   # (B, Di, h, w), NHWC in memory
    y = F.silu(conv(xc)).permute(0, 2, 3, 1)                                   # (B, h, w, Di)
    return y.reshape(Bsz, h * w, Di)
