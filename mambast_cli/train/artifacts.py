"""Numbers for two artefacts a stylised picture can show, so that models can be compared on them, not only by eye.

Owns `artifact_scores(outputs, contents)`. Both scores look at the stylisation residual r = luma(output) −
luma(content), so that the content's own structure mostly cancels:

- **streaks**: the model scans rows and columns, and an early model (MODEL.md) drew faint vertical lines across flat
  skies. Averaging r down each column keeps what is the same along a whole column; its high-pass energy (minus a
  9-px running mean) is compared with the same along rows. 1 = as much column structure as row structure; a
  picture with vertical streaks scores well above 1 (`streak_ratio`; `streak_rms` is the column part in 0–1 units).
- **patch grid**: the model works on 8×8 patches; a visible patch grid is energy at the harmonics of 1/8 cycle per
  pixel. `grid_ratio` is the power of r's spectrum at those frequencies over the median power of their neighbours
  (1 = nothing special there; a grid scores well above 1).

Does not load models or files. Inputs are (B, 3, H, W) float tensors in [0, 1]; scores are means over the batch.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = ["artifact_scores", "grid_penalty"]


def _luma(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]          # (B, H, W)


def _highpass_energy(p: torch.Tensor, k: int = 9) -> torch.Tensor:
    """Mean square of a profile (B, n) minus its k-tap running mean (replicate-padded): (B,)."""
    smooth = F.avg_pool1d(F.pad(p[:, None], (k // 2, k // 2), mode="replicate"), k, stride=1)[:, 0]
    return ((p - smooth) ** 2).mean(dim=1)


@functools.lru_cache(maxsize=32)
def _grid_bins(H: int, W: int, Wr: int, period: int, device: str) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Flat indices into an (H, Wr) half-spectrum of the period's harmonics and of each one's neighbours, grouped by
    the neighbours' count (4 on an axis, 8 off it) so that each group is one gather: ((peaks (P,), around (P, n)),
    ...). Cached, so a training step does not copy index lists to the GPU."""
    fy = [round(H * m / period) for m in range(1, period // 2 + 1)]
    fx = [round(W * m / period) for m in range(1, period // 2 + 1)]
    groups: dict[int, tuple[list[int], list[list[int]]]] = {}
    for y in [0] + fy:
        for x in [0] + fx:
            if (y, x) == (0, 0) or y + 2 >= H or x + 2 >= Wr:
                continue
            if y == 0:
                offs = [(0, -2), (0, -1), (0, 1), (0, 2)]
            elif x == 0:
                offs = [(-2, 0), (-1, 0), (1, 0), (2, 0)]
            else:
                offs = [(dy, dx) for dy in (-2, 0, 2) for dx in (-2, 0, 2) if (dy, dx) != (0, 0)]
            nb = [((y + dy) % H) * Wr + x + dx for dy, dx in offs if x + dx >= 0]
            peaks, around = groups.setdefault(len(nb), ([], []))
            peaks.append(y * Wr + x)
            around.append(nb)
    return tuple((torch.tensor(p, device=device), torch.tensor(a, device=device)) for p, a in groups.values())


def _grid_ratio(r: torch.Tensor, period: int, detach_around: bool = False) -> torch.Tensor:
    """Power at the period's harmonics over the median power of their neighbours: (B,). A harmonic on an axis of the
    spectrum is compared with its neighbours along that axis only, so that streaks (a broadband line along an axis)
    do not read as a grid. `detach_around`: no gradient through the neighbours (a loss then lowers the peaks only)."""
    B, H, W = r.shape
    spec = torch.fft.rfft2(r - r.mean(dim=(1, 2), keepdim=True)).abs() ** 2          # (B, H, W//2+1)
    groups = _grid_bins(H, W, spec.shape[2], period, str(r.device))
    if not groups:
        return torch.ones(B, device=r.device)
    flat = spec.reshape(B, -1)
    peak_sum = around_sum = 0
    for peaks, around in groups:
        med = flat[:, around].median(dim=2).values                                     # (B, P)
        peak_sum = peak_sum + flat[:, peaks].sum(1)
        around_sum = around_sum + (med.detach() if detach_around else med).sum(1)
    return peak_sum / around_sum.clamp_min(1e-20)


@torch.no_grad()
def artifact_scores(outputs: torch.Tensor, contents: torch.Tensor, period: int = 8) -> dict[str, float]:
    """Streak and patch-grid scores of stylised outputs against their contents (see the module docstring).

    Args:
        outputs: (B, 3, H, W) in [0, 1], the stylised pictures.
        contents: (B, 3, H, W) in [0, 1], the pictures they were made from (same size).
        period: the patch size whose grid to look for (the model's: 8).

    Returns:
        {"streak_ratio", "streak_rms", "grid_ratio"}: means over the batch (lower is cleaner; ~1 for the ratios
        means no preferred direction or period).
    """
    if outputs.shape != contents.shape or outputs.dim() != 4:
        raise ValueError(f"outputs {tuple(outputs.shape)} and contents {tuple(contents.shape)} must be the same (B, 3, H, W)")
    r = _luma(outputs.float()) - _luma(contents.float())
    col = _highpass_energy(r.mean(dim=1))              # profile across x: structure constant down each column
    row = _highpass_energy(r.mean(dim=2))              # profile across y
    return {"streak_ratio": float((col / row.clamp_min(1e-20)).mean()),
            "streak_rms": float(col.sqrt().mean()),
            "grid_ratio": float(_grid_ratio(r, period).mean())}


def grid_penalty(outputs: torch.Tensor, refs: torch.Tensor, period: int = 8) -> torch.Tensor:
    """The patch-grid score as a training loss: `grid_ratio` of outputs against refs, differentiable in `outputs`.

    Same value as `artifact_scores(...)["grid_ratio"]` (mean over the batch), computed in fp32 outside autocast; the
    neighbours' median power is detached, so the gradient only lowers the power at the period's harmonics and
    leaves the rest of the residual's spectrum (the style's texture) alone.

    Args:
        outputs: (B, 3, H, W) model outputs (unclamped is fine).
        refs: (B, 3, H, W) the pictures the residual is taken against (the contents; no gradient).
        period: the model's patch size.

    Returns:
        a scalar tensor (≈ 1 with no grid; the bundled models score ~5 on their stylised outputs).
    """
    if outputs.shape != refs.shape or outputs.dim() != 4:
        raise ValueError(f"outputs {tuple(outputs.shape)} and refs {tuple(refs.shape)} must be the same (B, 3, H, W)")
    with torch.autocast(outputs.device.type, enabled=False):
        r = _luma(outputs.float()) - _luma(refs.detach().float())
        return _grid_ratio(r, period, detach_around=True).mean()
