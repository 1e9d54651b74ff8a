"""The CNN decoder run channels-last, with each pad + ReLU + upsampling between two convolutions done in one pass.

Owns: `NHWCDecoder`, a drop-in callable for `MambaST.cnn` at inference: same input (B, C, h, w) features, same
output (B, 3, H, W) (channels-last in memory, i.e. already the (B, H, W, 3) layout pictures leave in), same values
as the `nn.Sequential` up to the convolution backend's summation order. On CUDA each convolution's bias but the
last is added by the next pad pass, not by a pass of its own (`fold_bias`). Why: BENCHMARKS.md (session 3 profile at
512²) puts cuDNN's NCHW↔NHWC transposes plus the reflection padding at ~40 % of the engine's GPU time; here the
convs read and write NHWC directly, and the glue is `mambast_kernels.pad_nhwc.pad_relu_up` (Triton on CUDA, the
PyTorch reference elsewhere).

Invariants: inference only (no autograd); the weights are copied once into the compute dtype, channels-last; the
decoder's layers must be the spec's pattern (pad 1 → 3×3 conv → [ReLU] → [nearest ×2]), anything else raises
ValueError so the engine keeps the plain module.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["NHWCDecoder", "nhwc_pad_backend"]


def nhwc_pad_backend(device: torch.device) -> str:
    """'triton' where the fused pad kernel runs (CUDA with Triton importable), else 'ref' (PyTorch ops)."""
    if device.type != "cuda":
        return "ref"
    try:
        from mambast_kernels import pad_nhwc  # noqa: F401
    except Exception:  # pragma: no cover - depends on the install
        return "ref"
    return "triton"


@dataclass
class _Step:
    weight: torch.Tensor          # (O, I, 3, 3), channels-last, compute dtype
    bias: torch.Tensor | None
    scale_in: int                 # nearest upsampling applied to this conv's input (1 or 2)
    relu_in: bool                 # ReLU applied to this conv's input (the previous conv's activation)
    relu_out: bool                # ReLU after this conv (only meaningful for the last step)


def _parse(cnn: nn.Sequential) -> list[tuple[nn.Conv2d, int, bool]]:
    """(conv, upsampling before it, ReLU after it) for each conv of a spec-pattern decoder; ValueError otherwise."""
    layers = list(cnn.children())
    out: list[tuple[nn.Conv2d, int, bool]] = []
    scale, i = 1, 0
    while i < len(layers):
        m = layers[i]
        if isinstance(m, nn.Upsample):
            f = m.scale_factor[0] if isinstance(m.scale_factor, tuple) else m.scale_factor
            if m.mode != "nearest" or f is None or float(f) != int(f) or scale != 1:
                raise ValueError("only one integer nearest upsampling between two convolutions is supported")
            scale, i = int(f), i + 1
            continue
        if not (isinstance(m, nn.ReflectionPad2d) and tuple(m.padding) == (1, 1, 1, 1)):
            raise ValueError(f"expected ReflectionPad2d(1), got {type(m).__name__}")
        conv = layers[i + 1] if i + 1 < len(layers) else None
        if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding == (0, 0)):
            raise ValueError("expected a plain 3×3 convolution after each reflection pad")
        relu = i + 2 < len(layers) and isinstance(layers[i + 2], nn.ReLU)
        out.append((conv, scale, relu))
        scale, i = 1, i + (3 if relu else 2)
    if scale != 1 or not out:
        raise ValueError("the decoder must end with a convolution")
    return out


class NHWCDecoder:
    """Callable replacement for the CNN decoder at inference (see the module docstring).

    Example:
        >>> dec = NHWCDecoder(model.cnn, torch.bfloat16)     # doctest: +SKIP
        >>> img = dec(feats)                                  # (B, 3, 8h, 8w), channels-last
    """

    def __init__(self, cnn: nn.Sequential, dtype: torch.dtype, backend: str | None = None,
                 fold_bias: bool | None = None) -> None:
        """Args:
            cnn: the `nn.Sequential` CNN decoder (`MambaST.cnn`); its parameters are copied, not shared.
            dtype: compute dtype of the convolutions (bf16 for the engine's autocast path, fp32 for the reference).
            backend: 'triton' or 'ref' for the pad kernel; default from the weights' device.
            fold_bias: add each convolution's bias (but the last) in the next pad pass. Default: with the Triton
                backend, i.e. on CUDA, where PyTorch adds a cuDNN convolution's bias in a pass of its own and folding
                gives the same bits; not on the CPU, where oneDNN adds it inside the convolution (nor with env
                MAMBAST_FOLD_BIAS=0).
        """
        parsed = _parse(cnn)
        dev = parsed[0][0].weight.device
        self.dtype = dtype
        self.backend = backend or nhwc_pad_backend(dev)
        if fold_bias is None:       # env MAMBAST_FOLD_BIAS=0: never (for A/B runs)
            fold_bias = self.backend == "triton" and os.environ.get("MAMBAST_FOLD_BIAS", "1") != "0"
        self.fold_bias = fold_bias
        self.steps: list[_Step] = []
        relu_prev = False
        for conv, scale, relu in parsed:
            w = conv.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
            b = conv.bias.detach().to(dtype) if conv.bias is not None else None
            self.steps.append(_Step(w, b, scale, relu_prev, relu))
            relu_prev = relu

    def _pad(self, x: torch.Tensor, relu: bool, scale: int, bias: torch.Tensor | None) -> torch.Tensor:
        from mambast_kernels.pad_nhwc import pad_relu_up, pad_relu_up_ref

        fn = pad_relu_up if self.backend == "triton" else pad_relu_up_ref
        return fn(x, relu=relu, scale=scale, bias=bias)

    @torch.no_grad()
    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, C, h, w), any dtype and memory format → (B, 3, s·h, s·w) in `dtype`, channels-last."""
        x = feats.to(self.dtype)
        pending = None      # a conv's bias, added by the next pad pass (PyTorch would add it in a pass of its own)
        for i, st in enumerate(self.steps):
            x = self._pad(x, st.relu_in, st.scale_in, pending)
            fold = self.fold_bias and i < len(self.steps) - 1
            x = F.conv2d(x, st.weight, None if fold else st.bias)
            pending = st.bias if fold else None
        if self.steps[-1].relu_out:
            x = F.relu(x)
        return x
