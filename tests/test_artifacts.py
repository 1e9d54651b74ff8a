"""Artefact scores (train/artifacts.py): they stay near 1 on direction-free noise and rise on the artefacts they name."""
from __future__ import annotations

import pytest
import torch

from mambast_cli.train.artifacts import artifact_scores


def _pair(seed: int = 0, h: int = 128, w: int = 160) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    content = torch.rand(2, 3, h, w, generator=g) * 0.5 + 0.25
    out = (content + 0.05 * torch.randn(2, 1, h, w, generator=g)).clamp(0, 1)   # texture without a direction
    return out, content


def test_noise_scores_near_one():
    s = artifact_scores(*_pair())
    assert 0.5 < s["streak_ratio"] < 2.0 and 0.3 < s["grid_ratio"] < 3.0 and s["streak_rms"] > 0


def test_vertical_streaks_raise_the_streak_ratio_only():
    out, content = _pair(1)
    g = torch.Generator().manual_seed(5)
    streaky = (out + 0.03 * torch.randn(2, 1, 1, out.shape[-1], generator=g)).clamp(0, 1)   # constant down columns
    s0, s = artifact_scores(out, content), artifact_scores(streaky, content)
    assert s["streak_ratio"] > 10 * s0["streak_ratio"] and s["streak_rms"] > 3 * s0["streak_rms"]
    assert s["grid_ratio"] < 3.0


def test_a_patch_grid_raises_the_grid_ratio():
    out, content = _pair(2)
    grid = torch.zeros(out.shape[-2:])
    grid[::8, :] += 0.04
    grid[:, ::8] += 0.04
    s0, s = artifact_scores(out, content), artifact_scores((out + grid).clamp(0, 1), content)
    assert s["grid_ratio"] > 10 * s0["grid_ratio"]


def test_shapes_must_match():
    out, content = _pair()
    with pytest.raises(ValueError):
        artifact_scores(out[:, :, :64], content)


def test_grid_penalty_is_the_grid_ratio_and_gradient_steps_remove_a_grid():
    """grid_penalty has grid_ratio's value, and descending its gradient takes exactly the painted patch grid out of
    an output (all of the grid's power sits at the period's harmonics, where the gradient acts; only its mean, the
    spectrum's (0, 0) term, stays), leaving the rest of the residual (the texture) as it was."""
    from mambast_cli.train.artifacts import grid_penalty

    out, content = _pair(3, h=64, w=80)
    grid = torch.zeros(out.shape[-2:])
    grid[::8, :] += 0.04
    grid[:, ::8] += 0.04
    x = (out + grid).requires_grad_(True)
    p0 = float(grid_penalty(x.detach(), content))
    assert abs(p0 - artifact_scores(x.detach(), content)["grid_ratio"]) < 1e-3 * p0
    for _ in range(40):
        x.grad = None
        grid_penalty(x, content).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        with torch.no_grad():                     # steps of a fixed length (the raw gradient's scale is arbitrary)
            x -= 0.05 * float(grid.norm()) * x.grad / x.grad.norm()
    p1 = float(grid_penalty(x.detach(), content))
    assert p1 < 0.05 * p0 and p1 < float(grid_penalty(out, content)), (p0, p1)
    def luma(t: torch.Tensor) -> torch.Tensor:                 # the penalty sees (and moves) the luma only
        return 0.299 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2]

    left = (luma(x.detach()) - luma(out) - grid.mean()).abs().mean()   # the rest: the noise's own harmonics
    assert float(left) < 0.5 * float((grid - grid.mean()).abs().mean()), float(left)
    moved = artifact_scores(x.detach().clamp(0, 1), (out + grid).clamp(0, 1))["grid_ratio"]
    assert moved > 100, moved                          # what changed is all at the period's harmonics


def test_grid_penalty_ignores_the_reference_gradient_and_checks_shapes():
    from mambast_cli.train.artifacts import grid_penalty

    out, content = _pair(4)
    c = content.clone().requires_grad_(True)
    grid_penalty(out.clone().requires_grad_(True), c).backward()
    assert c.grad is None
    with pytest.raises(ValueError):
        grid_penalty(out[:, :, :64], content)
