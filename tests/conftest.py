"""Shared pytest fixtures: tiny test pictures and the fake engine switch (see mambast_cli/pipeline/fake.py)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

# Triton kernels run through Triton's interpreter on machines without a GPU. Triton reads the variable when a
# kernel is decorated, so it is set here, before any test module imports mambast_kernels.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

ImageFactory = Callable[..., Path]


@pytest.fixture
def make_image(tmp_path: Path) -> ImageFactory:
    """Write a small picture and return its path.

    Call as ``make_image("a.jpg", size=(w, h), color=(r, g, b), fmt="JPEG", noise=False)``; the name may contain
    folders (created) and may be relative to ``tmp_path`` or absolute.
    """
    from PIL import Image

    def factory(name: str | os.PathLike[str], *, size: tuple[int, int] = (48, 32),
                color: tuple[int, int, int] = (200, 60, 30), fmt: str | None = None, noise: bool = False) -> Path:
        p = Path(name) if Path(name).is_absolute() else tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", size, color)
        if noise:
            import numpy as np

            rng = np.random.default_rng(abs(hash(p.name)) % 2**32)
            img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB")
        if fmt is None:
            fmt = {".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP"}.get(p.suffix.lower(), "JPEG")
        img.save(p, fmt)
        return p

    return factory


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Select the fake engine for the CLI and pipeline factory; call with a mode string (default ``1``)."""
    monkeypatch.setenv("MAMBAST_FAKE_ENGINE", "1")

    def select(mode: str = "1") -> None:
        monkeypatch.setenv("MAMBAST_FAKE_ENGINE", mode)

    return select


def no_part_files(root: Path) -> list[Path]:
    """Temporary ``.part-`` files left anywhere below ``root`` (should be none)."""
    return [p for p in root.rglob("*") if ".part-" in p.name]
