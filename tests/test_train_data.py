"""Training data: deterministic, disjoint hold-out; crops; rank-sharded infinite sampler."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mambast_cli.train.data import CropDataset, InfiniteSampler, StyleAug, hue_rotate, list_images, split_holdout


def _images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = rng.integers(0, 255, (70 + i % 5, 90, 3), dtype=np.uint8)
        Image.fromarray(a).save(folder / f"im_{i:03d}.png")
    (folder / "notes.md").write_text("not an image")
    return list_images(folder)


def test_holdout_is_deterministic_disjoint_and_name_based(tmp_path: Path) -> None:
    paths = [tmp_path / f"photo_{i}.jpg" for i in range(400)]
    tr1, va1 = split_holdout(paths, 0.05)
    tr2, va2 = split_holdout(list(reversed(paths)), 0.05)
    assert set(va1) == set(va2) and set(tr1) == set(tr2)
    assert not set(tr1) & set(va1) and len(tr1) + len(va1) == 400
    assert 5 <= len(va1) <= 40
    moved = [Path("/elsewhere") / p.name for p in paths]     # depends on the name only
    assert {p.name for p in split_holdout(moved, 0.05)[1]} == {p.name for p in va1}
    assert split_holdout(paths, 0.0)[1] == []


def test_crops_flags_and_determinism(tmp_path: Path) -> None:
    files = _images(tmp_path / "c", 4)
    assert len(files) == 4
    ds = CropDataset(files, crop=64, scale_max=80, aug=StyleAug(multiscale_max=120, rot90=True, hue=1.0, gray=0.5), seed=3)
    x = ds[(1, 7)]
    assert x.shape == (3, 64, 64) and 0 <= float(x.min()) and float(x.max()) <= 1
    torch.testing.assert_close(x, ds[(1, 7)])                # same (index, draw) → same crop
    assert not torch.equal(ds[(1, 7)], ds[(1, 8)])


def test_hue_rotation_keeps_grey_and_full_turn() -> None:
    grey = torch.full((3, 4, 4), 0.4)
    torch.testing.assert_close(hue_rotate(grey, 1.0), grey, atol=1e-5, rtol=0)
    x = torch.rand(3, 4, 4) * 0.5 + 0.25
    torch.testing.assert_close(hue_rotate(x, 2 * np.pi), x, atol=1e-5, rtol=0)


def test_sampler_shards_are_disjoint_and_resume_continues() -> None:
    a = list(itertools.islice(InfiniteSampler(10, seed=1, rank=0, world=2), 5))
    b = list(itertools.islice(InfiniteSampler(10, seed=1, rank=1, world=2), 5))
    assert not {i for i, _ in a} & {i for i, _ in b}
    full = list(itertools.islice(InfiniteSampler(10, seed=1), 12))
    assert list(itertools.islice(InfiniteSampler(10, seed=1, start=7), 5)) == full[7:12]
