"""mambast_kernels: selective-scan kernels for Mamba-ST, each beside its PyTorch reference.

`cross_scan` is the one dispatch point for the scan: it picks the Triton kernel for CUDA tensors when Triton is
importable (and `MAMBAST_SCAN=ref` is not set), and the PyTorch reference otherwise, so the CPU path never needs
Triton. The model calls it through `scan_norm_gate` (scan, direction merge, LayerNorm, gate).

Also here: `merge_norm` (the fused SS2D epilogue) and `pad_nhwc` (the CNN decoder's ReLU + nearest upsampling +
reflection pad as one channels-last pass, used by mambast_cli/engine/cnn_nhwc.py), each beside its reference.
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
           "backend_for", "scan_norm_gate", "fused_merge_enabled"]


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
        from .cross_scan_v2 import cross_scan_fwd_cl
        from .merge_norm import merge_norm_gate

        slots, _, _ = cross_scan_fwd_cl(u, delta, A, B, C, D, delta_bias, h, w, merge=False)
        return merge_norm_gate(slots, z, weight, bias, eps, out_dtype=z.dtype)
    y = cross_scan(u, delta, A, B, C, D, delta_bias, h, w, layout="cl")        # (S, G, L, Di) fp32
    S, G, L, Di = y.shape
    y = F.layer_norm(y.reshape(S * G, L, Di).to(weight.dtype), (Di,), weight, bias, eps)
    return y * F.silu(z.reshape(S * G, L, Di))
