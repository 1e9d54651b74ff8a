"""mambast_kernels: selective-scan kernels for Mamba-ST, each beside its PyTorch reference.

`cross_scan` is the one dispatch point the model calls. It picks the Triton kernel for CUDA tensors when
Triton is importable (and `MAMBAST_SCAN=ref` is not set), and the PyTorch reference otherwise, so the CPU
path never needs Triton.
"""
from __future__ import annotations

import os

import torch

from .scan_ref import K_DIRECTIONS, cross_scan_ref, direction_indices

try:  # the Triton path is optional: CPU-only installs run the reference
    from .cross_scan import cross_scan_triton  # type: ignore[attr-defined]
except Exception:  # pragma: no cover - depends on the install
    cross_scan_triton = None

__all__ = ["K_DIRECTIONS", "cross_scan", "cross_scan_ref", "cross_scan_triton", "direction_indices", "backend_for"]


def backend_for(x: torch.Tensor) -> str:
    """Which implementation `cross_scan` would use for a tensor on this device: 'triton' or 'ref'."""
    forced = os.environ.get("MAMBAST_SCAN", "").lower()
    if forced in ("ref", "triton"):
        return forced
    if x.is_cuda and cross_scan_triton is not None:
        return "triton"
    return "ref"


def cross_scan(u, delta, A, B, C, D, delta_bias, h: int, w: int, backend: str | None = None):
    """4-direction selective scan, G readouts per recurrence; see `scan_ref.cross_scan_ref` for shapes."""
    backend = backend or backend_for(u)
    if backend == "triton":
        if cross_scan_triton is None:
            raise RuntimeError("Triton scan requested but mambast_kernels.cross_scan could not be imported")
        return cross_scan_triton(u, delta, A, B, C, D, delta_bias, h, w)
    return cross_scan_ref(u, delta, A, B, C, D, delta_bias, h, w)
