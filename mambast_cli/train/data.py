"""Training data: image folders, a deterministic hold-out split, random crops and cheap style augmentations.

Owns listing image files, the train/validation split, per-sample transforms and the infinite, seeded,
rank-sharded loaders. Does not touch the model; prints only a one-line warning to stderr when it skips an
unreadable training image. Tensors leave as (3, S, S) float32 in [0, 1].

Crops (spec §5 says Resize(512²) squash, then RandomCrop(256)). Our data is only 320 px on the short side, so
upscaling to 512 would only blur it. Instead each image is resized (aspect kept) so that its short side is a
random length in [crop, scale_max] (default [256, 320]), then a random crop × crop (256²) is taken, then a
random horizontal flip. Validation images are resized to a short side of `crop` and centre-cropped.

Style-only augmentations, each behind a flag (StyleAug): multi-scale (short side up to `multiscale_max`),
90° rotations, hue rotation (a rotation of the chroma plane in YIQ space), and random grey-scale.

Hold-out: a file is held out when the first 8 bytes of sha256(file name) / 2**64 < val_frac. It depends only on
the name, so the split is stable when files are added, and the held-out files are never trained on.
"""
from __future__ import annotations

import hashlib
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

from mambast_cli.errors import InputError, UsageError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def list_images(folder: Path) -> list[Path]:
    """All image files below `folder` (recursive, by extension), sorted. Raises UsageError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"not a folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise UsageError(f"no images found in {folder}")
    return files


def is_held_out(name: str, val_frac: float) -> bool:
    """True if a file name falls in the validation split (deterministic hash of the name)."""
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    return h / 2.0**64 < val_frac


def split_holdout(paths: Sequence[Path], val_frac: float = 0.05) -> tuple[list[Path], list[Path]]:
    """Split files into (train, val) by hash of the file name.

    Args:
        paths: image files.
        val_frac: fraction held out (0 disables validation).
    Returns:
        (train, val), disjoint, each sorted as given. If the hash happens to hold out nothing while
        val_frac > 0, the one file with the smallest hash is held out so validation always has data.
    """
    train = [p for p in paths if not is_held_out(p.name, val_frac)]
    val = [p for p in paths if is_held_out(p.name, val_frac)]
    if val_frac > 0 and not val and len(paths) > 1:
        first = min(paths, key=lambda p: hashlib.sha256(p.name.encode("utf-8")).digest())
        val = [first]
        train = [p for p in paths if p != first]
    return train, val


def load_rgb(path: Path) -> Image.Image:
    """Open an image as RGB with its EXIF orientation applied. Raises InputError if unreadable."""
    try:
        with Image.open(path) as im:
            return ImageOps.exif_transpose(im).convert("RGB")
    except Exception as e:  # PIL raises several unrelated types
        raise InputError(f"cannot read image {path}: {e}") from e


def to_tensor(im: Image.Image) -> torch.Tensor:
    """PIL RGB → (3, H, W) float32 in [0, 1]."""
    a = np.asarray(im, dtype=np.uint8).copy()
    return torch.from_numpy(a).permute(2, 0, 1).float().div_(255.0)


def resize_short(im: Image.Image, short: int) -> Image.Image:
    """Resize keeping aspect so the short side is `short` pixels (bicubic, antialiased)."""
    w, h = im.size
    s = short / min(w, h)
    return im.resize((max(short, round(w * s)), max(short, round(h * s))), Image.BICUBIC)


def center_crop_tensor(path: Path, size: int) -> torch.Tensor:
    """Validation view: short side → `size`, centre crop size². Returns (3, size, size) in [0, 1]."""
    im = resize_short(load_rgb(path), size)
    w, h = im.size
    x0, y0 = (w - size) // 2, (h - size) // 2
    return to_tensor(im.crop((x0, y0, x0 + size, y0 + size)))


def hue_rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate hue by `angle` radians: a rotation of the I/Q chroma plane in YIQ space. x (3,H,W) in [0,1]."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq
    return torch.einsum("ij,jhw->ihw", m, x).clamp_(0, 1)


@dataclass
class StyleAug:
    """Cheap style augmentations (all off by default = the paper's crops + our flips).

    Attributes:
        multiscale_max: if > 0, the short side is drawn from [crop, multiscale_max] instead of [crop, scale_max].
        rot90: random 0/90/180/270° rotations.
        hue: probability of a random hue rotation.
        gray: probability of turning the artwork grey.
    """

    multiscale_max: int = 0
    rot90: bool = False
    hue: float = 0.0
    gray: float = 0.0


class CropDataset(Dataset):
    """Random 256² training crops of a list of image files.

    Args:
        paths: image files.
        crop: crop size (256).
        scale_max: largest short side before cropping (320 fits the data; see the module docstring).
        flip: random horizontal flips.
        aug: style augmentations (None = off).
        seed: base seed; each item's randomness comes from (seed, index, draw counter) so workers don't repeat.
    """

    def __init__(self, paths: Sequence[Path], crop: int = 256, scale_max: int = 320, flip: bool = True,
                 aug: StyleAug | None = None, seed: int = 0) -> None:
        self.paths = list(paths)
        self.crop, self.scale_max, self.flip = crop, max(scale_max, crop), flip
        self.aug = aug or StyleAug()
        self.seed = seed
        self.unreadable: set[int] = set()   # indices already warned about (per worker process)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        idx, draw = key if isinstance(key, tuple) else (key, 0)
        rng = random.Random(hash((self.seed, idx, draw)))
        for k in range(len(self.paths)):     # an unreadable file is skipped (warned once): the next one stands in
            j = (idx + k) % len(self.paths)
            try:
                im = load_rgb(self.paths[j])
                break
            except InputError as e:
                if j not in self.unreadable:
                    self.unreadable.add(j)
                    print(f"warning: skipping an unreadable training image: {e}", file=sys.stderr, flush=True)
        else:
            raise InputError(f"none of the {len(self.paths)} training images in this folder can be read")
        hi = self.aug.multiscale_max if self.aug.multiscale_max > 0 else self.scale_max
        im = resize_short(im, rng.randint(self.crop, max(hi, self.crop)))
        w, h = im.size
        x0, y0 = rng.randint(0, w - self.crop), rng.randint(0, h - self.crop)
        x = to_tensor(im.crop((x0, y0, x0 + self.crop, y0 + self.crop)))
        if self.flip and rng.random() < 0.5:
            x = x.flip(-1)
        if self.aug.rot90:
            x = torch.rot90(x, rng.randint(0, 3), (1, 2))
        if self.aug.hue > 0 and rng.random() < self.aug.hue:
            x = hue_rotate(x, rng.uniform(-math.pi, math.pi))
        if self.aug.gray > 0 and rng.random() < self.aug.gray:
            x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).expand(3, -1, -1).clone()
        return x


class InfiniteSampler(Sampler):
    """Endless shuffled indices for one rank: epoch e uses permutation(seed, e), rank r takes every world-th item.

    Each index is yielded as (index, draw) where `draw` counts samples so far, so random crops differ every time
    an image comes round. `start` skips that many samples (resume continues the stream instead of replaying it).
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0) -> None:
        self.n, self.seed, self.rank, self.world, self.start = n, seed, rank, world, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        count = 0
        epoch = 0
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            mine = perm[self.rank::self.world] or perm[: 1]
            for i in mine:
                if count >= self.start:
                    yield (i, count)
                count += 1
            epoch += 1

    def __len__(self) -> int:  # pragma: no cover - infinite
        return 2**62


def infinite_loader(ds: CropDataset, batch_size: int, seed: int, rank: int = 0, world: int = 1, workers: int = 4,
                    start: int = 0, pin_memory: bool = False) -> Iterator[torch.Tensor]:
    """An endless iterator of (batch_size, 3, S, S) batches for one rank.

    Args:
        ds: the dataset. batch_size: per rank. seed: data seed (same on every rank; shards differ by rank).
        rank, world: this process's shard. workers: DataLoader worker processes (0 = main process).
        start: samples already consumed by this rank (for resume). pin_memory: pin host memory for fast copies.
    Returns:
        An iterator that never ends.
    """
    sampler = InfiniteSampler(len(ds), seed=seed, rank=rank, world=world, start=start)
    dl = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                    drop_last=True, persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)
    return iter(dl)
