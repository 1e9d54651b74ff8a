"""Temporal stability of stylised video: an input-guided smoother and the flicker measurement.

Owns :class:`TemporalSmoother` (no retraining needed), the metrics and the test scenes (synthetic, or built from a
picture the caller loads) used by scripts/measure_stability.py. Pure tensor code: no file access, no printing, no
model calls.

Why flicker happens and what is done about it (spec §2.9): the official code redraws the style-token shuffle on
every call, so each frame gets different permutations and the texture jumps. The video job builds ONE StyleHandle per
video (fixed permutations), which removes that source. What remains is the model's response to small input changes
(sensor noise, compression). The smoother blends each output with the previous smoothed output where the *input*
did not change:

    d_t   = | lowpass(gray(x_t)) - r_{t-1} |                   (low-resolution, so noise does not count as change)
    w_t   = w_max · exp(-(d_t / tau)^2),  w_max = 1 - 1/N      (N = --smooth: frames averaged where nothing moves)
    s_t   = w_t · s_{t-1} + (1 - w_t) · y_t                     (y_t: the stylised frame, s_t: what is written)
    r_t   = w_t · r_{t-1} + (1 - w_t) · lowpass(gray(x_t))     (the reference follows the same blend, so slow drifts
                                                                 are compared with what the state actually holds)

Where anything moves, w → 0 and the stylised frame passes through untouched (no ghosting); on a static shot the output
becomes an N-frame average. Invariants: inputs/outputs are (B, 3, H, W) float in [0, 1]; the state lives on the
tensors' device; frames must be given in presentation order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEFAULT_SMOOTH = 4          # the default --smooth (measured by scripts/measure_stability.py)
DEFAULT_TAU = 0.03          # change (in [0,1] luma, after the low-pass) at which the blend weight falls to 1/e


def _lowres_gray(x: "torch.Tensor", factor: int) -> "torch.Tensor":
    """(B,3,H,W) → (B,1,h,w): luma, averaged over factor×factor blocks, then a 3×3 box blur."""
    import torch.nn.functional as F

    g = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    if factor > 1:
        g = F.avg_pool2d(g, factor, ceil_mode=True)
    return F.avg_pool2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


class TemporalSmoother:
    """Input-guided exponential moving blend of consecutive stylised frames (see the module docstring)."""

    def __init__(self, n: int = DEFAULT_SMOOTH, *, tau: float = DEFAULT_TAU, factor: int = 0) -> None:
        """Make a smoother.

        Args:
            n: frames averaged where the input is static (w_max = 1 - 1/n); n <= 1 disables smoothing.
            tau: input change (luma in [0,1], after the low-pass) at which the weight drops to w_max/e.
            factor: down-sampling of the change map (0: automatic, about 1/4 of the size, at least 1).
        """
        self.n = int(n)
        self.w_max = 0.0 if self.n <= 1 else 1.0 - 1.0 / self.n
        self.tau = float(tau)
        self.factor = int(factor)
        self._s: torch.Tensor | None = None     # (1,3,H,W) last smoothed output
        self._r: torch.Tensor | None = None     # (1,1,h,w) reference input (low-res luma)

    @property
    def enabled(self) -> bool:
        """Whether the smoother changes anything."""
        return self.w_max > 0.0

    def reset(self) -> None:
        """Forget the state (call between videos)."""
        self._s = self._r = None

    def __call__(self, inputs: "torch.Tensor", outputs: "torch.Tensor") -> "torch.Tensor":
        """Smooth a batch of consecutive frames, continuing from the previous batch.

        Args:
            inputs: (B, 3, H, W) float [0, 1], the content frames the outputs were made from.
            outputs: (B, 3, H, W) float, the stylised frames (same size as inputs).

        Returns:
            (B, 3, H, W) smoothed outputs on the outputs' device (the input tensors are not modified).
        """
        import torch
        import torch.nn.functional as F

        if not self.enabled:
            return outputs
        B, _, H, W = outputs.shape
        x = inputs.to(device=outputs.device, dtype=torch.float32)
        y = outputs.to(torch.float32)
        factor = self.factor or max(1, min(H, W) // 64)
        g = _lowres_gray(x, factor)                                   # (B,1,h,w)
        res = torch.empty_like(y)
        for b in range(B):
            gb, yb = g[b : b + 1], y[b : b + 1]
            if self._s is None or self._s.shape != yb.shape or self._r is None:
                self._s, self._r = yb.clone(), gb.clone()
                res[b] = yb[0]
                continue
            d = (gb - self._r).abs()
            w_lr = self.w_max * torch.exp(-((d / self.tau) ** 2))       # (1,1,h,w)
            w = F.interpolate(w_lr, size=(H, W), mode="bilinear", align_corners=False) if factor > 1 else w_lr
            self._s = torch.lerp(yb, self._s, w)                        # w·s + (1-w)·y
            self._r = torch.lerp(gb, self._r, w_lr)
            res[b] = self._s[0]
        return res.to(outputs.dtype)


# ------------------------------------------------------------------------------------------------ measurement
def mean_abs_diff(frames: "torch.Tensor") -> float:
    """Mean absolute difference between consecutive frames.

    Args:
        frames: (T, 3, H, W) float, T >= 2.

    Returns:
        mean over t of mean |f_t - f_{t-1}|.
    """
    return float((frames[1:] - frames[:-1]).abs().mean())


def flicker_ratio(inputs: "torch.Tensor", outputs: "torch.Tensor") -> float:
    """Temporal change of the outputs relative to that of the inputs (lower is steadier; 1 = as much as the input).

    Args:
        inputs: (T, 3, H, W) content frames.
        outputs: (T, 3, H, W) stylised frames.

    Returns:
        mean_abs_diff(outputs) / mean_abs_diff(inputs).
    """
    return mean_abs_diff(outputs) / max(mean_abs_diff(inputs), 1e-12)


def compensated_diff(frames: "torch.Tensor", dx: int, dy: int = 0, margin: int = 8) -> float:
    """Mean |f_t - f_{t-1}| after undoing a known integer pan of (dx, dy) pixels per frame (the residual change
    that is not explained by the motion: flicker and texture swimming).

    Args:
        frames: (T, 3, H, W).
        dx: horizontal content motion per frame in pixels (content moves left when the camera pans right: dx > 0
            means f_t[x] = f_{t-1}[x + dx]).
        dy: vertical motion, same convention.
        margin: pixels ignored at each border (padding effects).

    Returns:
        The mean residual.
    """
    T, _, H, W = frames.shape
    a = frames[1:, :, margin : H - margin - dy, margin : W - margin - dx]
    b = frames[:-1, :, margin + dy : H - margin, margin + dx : W - margin]
    return float((a - b).abs().mean())


@dataclass
class Scene:
    """A synthetic clip: frames and the per-frame motion that made it."""

    frames: "torch.Tensor"   # (T, 3, H, W) float [0, 1]
    dx: int
    dy: int


def synthetic_canvas(height: int, width: int, seed: int = 0) -> "torch.Tensor":
    """A deterministic photo-like picture: smooth colour fields, a few shapes with edges, fine texture.

    Args:
        height: rows.
        width: columns.
        seed: RNG seed.

    Returns:
        (3, height, width) float [0, 1].
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    img = torch.zeros(3, height, width)
    for c in range(3):
        for _ in range(4):
            fx, fy, ph = (torch.rand(3, generator=g) * torch.tensor([6.0, 6.0, 2 * math.pi])).tolist()
            img[c] += torch.sin(2 * math.pi * (fx * xx + fy * yy) + ph) * 0.12
        img[c] += 0.5
    for _ in range(8):   # discs and boxes with hard edges
        cx, cy, r = torch.rand(3, generator=g).tolist()
        col = torch.rand(3, generator=g).view(3, 1, 1)
        mask = ((xx - cx) ** 2 * (width / height) ** 2 + (yy - cy) ** 2) < (0.05 + 0.15 * r) ** 2
        if torch.rand(1, generator=g).item() < 0.5:
            mask = ((xx - cx).abs() < 0.05 + 0.1 * r) & ((yy - cy).abs() < 0.05 + 0.12 * r)
        img = torch.where(mask, col.expand_as(img), img)
    tex = torch.rand(1, height, width, generator=g)
    tex = torch.nn.functional.avg_pool2d(tex[None], 3, stride=1, padding=1)[0]
    img = img + (tex - 0.5) * 0.15
    return img.clamp(0, 1)


def static_scene(frames: int = 24, height: int = 144, width: int = 256, noise: float = 0.02, seed: int = 0,
                 base: "torch.Tensor | None" = None) -> Scene:
    """A locked-off shot: the same picture with fresh Gaussian sensor noise on every frame.

    Args:
        frames: clip length.
        height: rows.
        width: columns.
        noise: noise standard deviation (in [0,1] units).
        seed: RNG seed (of the noise, and of the synthetic picture when ``base`` is None).
        base: (3, H, W) float [0,1] picture to use (a real photo); its top-left height×width crop is taken.
            None: :func:`synthetic_canvas`.

    Returns:
        The Scene (dx = dy = 0).
    """
    import torch

    if base is None:
        base = synthetic_canvas(height, width, seed)
    else:
        if base.shape[-2] < height or base.shape[-1] < width:
            raise ValueError(f"base picture {tuple(base.shape[-2:])} is smaller than {height}x{width}")
        base = base[:, :height, :width].float()
    g = torch.Generator().manual_seed(seed + 1)
    fr = torch.stack([(base + noise * torch.randn(base.shape, generator=g)).clamp(0, 1) for _ in range(frames)])
    return Scene(fr, 0, 0)


def pan_scene(frames: int = 24, height: int = 144, width: int = 256, speed: int = 2, noise: float = 0.01,
              seed: int = 0, base: "torch.Tensor | None" = None) -> Scene:
    """A slow horizontal pan over a larger picture (content moves left by ``speed`` px per frame), with noise.

    Args:
        frames: clip length.
        height: rows.
        width: columns.
        speed: pixels per frame.
        noise: noise standard deviation.
        seed: RNG seed (of the noise, and of the synthetic picture when ``base`` is None).
        base: (3, H, W) float [0,1] picture to pan over (a real photo): the window starts at its top-left corner;
            it must be at least ``height`` rows and ``width + speed * (frames - 1)`` columns. None:
            :func:`synthetic_canvas`.

    Returns:
        The Scene (dx = speed).
    """
    import torch

    if base is None:
        base = synthetic_canvas(height, width + speed * frames, seed)
    else:
        need = width + speed * (frames - 1)
        if base.shape[-2] < height or base.shape[-1] < need:
            raise ValueError(f"base picture {tuple(base.shape[-2:])} is smaller than {height}x{need}")
        base = base[:, :height].float()
    g = torch.Generator().manual_seed(seed + 2)
    fr = torch.stack([
        (base[:, :, t * speed : t * speed + width] + noise * torch.randn(3, height, width, generator=g)).clamp(0, 1)
        for t in range(frames)
    ])
    return Scene(fr, speed, 0)
