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
