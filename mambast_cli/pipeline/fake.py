"""A tiny stand-in for the Engine, for tests and for exercising the pipeline without weights.

Selected by the environment variable ``MAMBAST_FAKE_ENGINE`` (read by :func:`mambast_cli.pipeline.create_engine`),
a comma-separated list of modes:

- ``1`` / ``fast`` / ``identity``: deterministic, style-dependent output (content blended with the style's mean
  colour by ``alpha``); nothing else.
- ``slow``: sleep ``MAMBAST_FAKE_DELAY`` seconds (default 0.2) per picture in ``stylize``.
- ``oom``: raise ``torch.OutOfMemoryError`` for batches larger than ``MAMBAST_FAKE_OOM_ABOVE`` (default 1).
- ``interrupt``: raise KeyboardInterrupt once ``MAMBAST_FAKE_INTERRUPT_AFTER`` pictures (default 2) are done.
- ``die``: the process exits at once (``os._exit(17)``, like a crashed GPU worker) in ``stylize`` once
  ``MAMBAST_FAKE_DIE_AFTER`` pictures (default 2) are done, but only in the multi-device worker whose rank
  (``MAMBAST_WORKER_RANK``, set by mambast_cli.pipeline.multi) equals ``MAMBAST_FAKE_DIE_RANK`` (default 1).
- ``noweights``: the constructor raises WeightsError (as the real Engine does without bundled weights).
- ``baddevice``: the constructor raises DeviceError.

Never prints; no file access. Implements the Engine API used by the pipeline: ``info``, ``encode_style``,
``stylize``, ``max_batch``, ``stats``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from mambast_cli.errors import DeviceError, WeightsError


@dataclass
class FakeStyle:
    """A style handle: the style's mean colour (3,) and its cache key."""

    mean: Any
    key: str | None


class FakeEngine:
    """Deterministic fake engine (see the module docstring for the modes)."""

    def __init__(self, mode: str = "1", *, weights: str | None = None, device: str = "auto",
                 precision: str = "auto", seed: int = 0, cache_dir: str | None = None, disk_cache: bool = True) -> None:
        """Build the fake.

        Args:
            mode: comma-separated modes.
            weights: recorded only.
            device: recorded only.
            precision: recorded only.
            seed: mixed into the output so that determinism tests can see it.
            cache_dir: ignored.
            disk_cache: ignored.
        """
        self.modes = {m.strip() for m in mode.split(",") if m.strip()}
        if "noweights" in self.modes:
            raise WeightsError("no trained weights are bundled yet (fake engine)", hint="pass --weights PATH")
        if "baddevice" in self.modes:
            raise DeviceError(f"device {device!r} is not available (fake engine)", hint="use --device cpu")
        self.weights, self.device, self.precision, self.seed = weights, device, precision, seed
        self.delay = float(os.environ.get("MAMBAST_FAKE_DELAY", "0.2"))
        self.oom_above = int(os.environ.get("MAMBAST_FAKE_OOM_ABOVE", "1"))
        self.interrupt_after = int(os.environ.get("MAMBAST_FAKE_INTERRUPT_AFTER", "2"))
        self.stats: dict[str, int] = {"style_cache_hits": 0, "style_encodes": 0, "images": 0}
        self.calls: list[int] = []  # batch size of every successful stylize call
        self._cache: dict[str, FakeStyle] = {}

    def info(self) -> dict[str, Any]:
        """Versions and settings, like Engine.info()."""
        import torch

        return {"engine": "fake", "modes": sorted(self.modes), "torch": torch.__version__, "device": "cpu",
                "precision": "fp32", "weights": self.weights or "(fake)", "seed": self.seed}

    def max_batch(self, h: int, w: int) -> int:
        """A fixed suggestion of 4 pictures per batch."""
        return 4

    def encode_style(self, image: Any, *, key: str | None = None, style_size: int | None = None) -> FakeStyle:
        """Reduce a style picture to its mean colour (cached by key)."""
        if key is not None and key in self._cache:
            self.stats["style_cache_hits"] += 1
            return self._cache[key]
        self.stats["style_encodes"] += 1
        h = FakeStyle(image.float().mean(dim=(1, 2)), key)
        if key is not None:
            self._cache[key] = h
        return h

    def stylize(self, contents: Any, style: FakeStyle, *, alpha: float = 1.0, preserve_color: bool = False,
                on_device: bool = False) -> Any:
        """Blend each content with the style's mean colour; honours the slow/oom/interrupt modes."""
        import torch

        b = contents.shape[0]
        if "oom" in self.modes and b > self.oom_above:
            raise torch.OutOfMemoryError(f"fake OOM for a batch of {b}")
        if "interrupt" in self.modes and self.stats["images"] >= self.interrupt_after:
            raise KeyboardInterrupt
        if ("die" in self.modes and os.environ.get("MAMBAST_WORKER_RANK") == os.environ.get("MAMBAST_FAKE_DIE_RANK", "1")
                and self.stats["images"] >= int(os.environ.get("MAMBAST_FAKE_DIE_AFTER", "2"))):
            os._exit(17)
        if "slow" in self.modes:
            time.sleep(self.delay * b)
        styled = 0.5 * contents + 0.5 * style.mean.view(1, 3, 1, 1) + 0.001 * (self.seed % 7)
        out = (1.0 - alpha) * contents + alpha * styled
        self.stats["images"] += b
        self.calls.append(b)
        return out.clamp(0.0, 1.0).cpu()
