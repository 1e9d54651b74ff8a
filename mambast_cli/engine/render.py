"""Rendering helpers for the engine: exact spatial tiling of the CNN decoder, and colour preservation.

Owns: `cnn_geometry` (scale factor and halo of a CNN decoder, derived from its layers), `tiled_cnn` (run the CNN
decoder over overlapping tiles of the feature map and stitch the centres, bit-for-bit the same maths as the untiled
call), `TiledCNN` (the same as an nn.Module, so `MambaST.render` can use it unchanged and keep its own crop), and
`preserve_color` (keep the stylised luminance, take the chroma from the content).

Invariants: feature maps are (B, C, h, w); images (B, 3, H, W) with H = scale·h. No I/O, no printing, no device
choices: everything runs where its inputs are.

Why tiling is exact: the CNN decoder is a chain of (pad, 3×3 conv, ReLU) and ×2 nearest upsamplings (spec §2.11).
Cutting the feature map makes each tile's pad see reflected values instead of the true neighbours; that error
creeps inwards by the conv's reach at each conv and doubles at each upsampling. `cnn_geometry` walks the layers and
adds it up (for the official decoder: 30 output pixels, i.e. 4 feature tokens), and each tile carries at least that
many extra feature tokens (the halo) on every side that is not a true image border. Only the tile's centre is kept,
where every output pixel saw exactly the inputs it sees untiled. Tiles start at multiples of the feature grid, so
nearest upsampling stays aligned.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

__all__ = ["CNNGeometry", "cnn_geometry", "tiled_cnn", "TiledCNN", "preserve_color", "luma"]

# BT.601 luma weights (the Y of full-range YCbCr, as JPEG uses).
_LUMA = (0.299, 0.587, 0.114)


class CNNGeometry(tuple):
    """(scale, halo): output pixels per feature token, and the halo in feature tokens that makes tiling exact."""

    @property
    def scale(self) -> int:
        return int(self[0])

    @property
    def halo(self) -> int:
        return int(self[1])


def _pair(v: int | tuple[int, ...]) -> int:
    """The larger of an int-or-pair (the layers we meet are square)."""
    return max(v) if isinstance(v, tuple) else int(v)


def cnn_geometry(cnn: nn.Module) -> CNNGeometry:
    """Scale factor and exact-tiling halo of a CNN decoder built from pads, convs, upsamplings and activations.

    Args:
        cnn: the CNN decoder (an nn.Sequential, e.g. `MambaST.cnn`). Unknown layer types raise ValueError, since
            the halo could not be trusted.

    Returns:
        CNNGeometry(scale, halo): `scale` output pixels per feature token, `halo` feature tokens of overlap.
    """
    layers = list(cnn.children()) if isinstance(cnn, nn.Sequential) else [cnn]
    scale = 1
    wrong = 0          # rows next to a cut that differ from the untiled result, in current-resolution pixels
    pending_pad = 0    # explicit pad layers waiting for their conv
    for m in layers:
        if isinstance(m, (nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ZeroPad2d, nn.ConstantPad2d)):
            pending_pad += max(m.padding)
        elif isinstance(m, nn.Conv2d):
            if _pair(m.stride) != 1:
                raise ValueError("tiling supports stride-1 convolutions only")
            reach = (_pair(m.kernel_size) - 1) * _pair(m.dilation)
            if isinstance(m.padding, str):            # 'same' or 'valid'
                own = reach // 2 if m.padding == "same" else 0
            else:
                own = _pair(m.padding)
            pad = pending_pad + own
            wrong += max(pad, reach - pad)        # a window starting (or ending) inside the bad rows goes bad
            pending_pad = 0
        elif isinstance(m, nn.Upsample):
            f = m.scale_factor
            f = f[0] if isinstance(f, tuple) else f
            if f is None or float(f) != int(f) or m.mode != "nearest":
                raise ValueError("tiling supports integer nearest upsampling only")
            scale *= int(f)
            wrong *= int(f)
        elif isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Identity, nn.Tanh, nn.Sigmoid)):
            pass
        else:
            raise ValueError(f"cannot derive a tiling halo through {type(m).__name__}")
    return CNNGeometry((scale, math.ceil(wrong / scale) if wrong else 0))


def _spans(n: int, tile: int) -> list[tuple[int, int]]:
    """Split range(n) into consecutive [a, b) spans of about `tile` (balanced, each at least 1)."""
    k = max(1, math.ceil(n / max(1, tile)))
    edges = [round(i * n / k) for i in range(k + 1)]
    return [(edges[i], edges[i + 1]) for i in range(k) if edges[i + 1] > edges[i]]


def tiled_cnn(
    cnn: Callable[[torch.Tensor], torch.Tensor],
    feats: torch.Tensor,
    tile: int,
    geometry: CNNGeometry,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run `cnn` on overlapping tiles of `feats` and stitch the tile centres: equal to `cnn(feats)`.

    Args:
        cnn: the CNN decoder (any callable with the geometry `geometry` describes).
        feats: (B, C, h, w) decoder features.
        tile: core tile side in feature tokens (each tile adds `geometry.halo` tokens per inner side).
        geometry: from `cnn_geometry(cnn)`.
        out: optional preallocated (B, 3, s·h, s·w) output.

    Returns:
        (B, C_out, s·h, s·w), the same values as the untiled call (up to floating-point summation order of the
        convolution backend, which in practice is identical).
    """
    B, _, h, w = feats.shape
    s, halo = geometry.scale, geometry.halo
    for ra, rb in _spans(h, tile):
        for ca, cb in _spans(w, tile):
            ea, eb = max(0, ra - halo), min(h, rb + halo)     # extended rows
            ec, ed = max(0, ca - halo), min(w, cb + halo)     # extended cols
            y = cnn(feats[:, :, ea:eb, ec:ed])                # (B, C_out, s·(eb-ea), s·(ed-ec))
            core = y[:, :, (ra - ea) * s:(rb - ea) * s, (ca - ec) * s:(cb - ec) * s]
            if out is None:
                out = y.new_empty((B, y.shape[1], h * s, w * s))
            out[:, :, ra * s:rb * s, ca * s:cb * s] = core
            del y, core
    assert out is not None
    return out


class TiledCNN(nn.Module):
    """Wraps a CNN decoder so that its forward runs tiled once the output exceeds `max_pixels` per call.

    Put in place of `MambaST.cnn` (see `Engine`), so `MambaST.render` keeps doing its own crop.
    """

    def __init__(self, cnn: nn.Module, max_pixels: int, geometry: CNNGeometry | None = None,
                 call: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Args:
            cnn: the CNN decoder module (its geometry is derived from it).
            max_pixels: output pixels (B·H·W) one CNN call may produce; larger renders are split.
            geometry: precomputed `cnn_geometry(cnn)`.
            call: what to call per piece (e.g. a torch.compile'd `cnn`); default `cnn` itself.
        """
        super().__init__()
        self.inner = cnn
        self.call = call or cnn
        self.max_pixels = int(max_pixels)
        self.geometry = geometry or cnn_geometry(cnn)
        self.tiled_calls = 0

    def tile_for(self, h: int, w: int) -> int:
        """Core tile side (feature tokens) whose extended tile stays within `max_pixels` output pixels."""
        s, halo = self.geometry.scale, self.geometry.halo
        side = int(math.isqrt(max(1, self.max_pixels)) // s)   # extended tile side in tokens
        return max(1, side - 2 * halo)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        B, _, h, w = feats.shape
        s = self.geometry.scale
        if B * h * w * s * s <= self.max_pixels:
            return self.call(feats)
        if B > 1 and h * w * s * s <= self.max_pixels:       # one image fits: split the batch only
            per = max(1, self.max_pixels // (h * w * s * s))
            return torch.cat([self.call(feats[i:i + per]) for i in range(0, B, per)])
        self.tiled_calls += 1
        return torch.cat([tiled_cnn(self.call, feats[i:i + 1], self.tile_for(h, w), self.geometry)
                          for i in range(B)])


def luma(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma Y of (B, 3, H, W) RGB → (B, 1, H, W)."""
    r, g, b = img[:, 0:1], img[:, 1:2], img[:, 2:3]
    return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b


def preserve_color(stylised: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Keep the stylised image's luminance and take the chroma (Cb, Cr) from the content (full-range YCbCr).

    Because RGB→YCbCr is linear and a pure-Y change maps to a grey RGB offset, this is exactly
    `content + (Y(stylised) − Y(content))` added to every channel. Not clamped (the caller clamps).

    Args:
        stylised: (B, 3, H, W) model output.
        content: (B, 3, H, W) the content images, same size.

    Returns:
        (B, 3, H, W) in the stylised tensor's dtype.
    """
    c = content.to(stylised.dtype)
    return c + (luma(stylised) - luma(c))
