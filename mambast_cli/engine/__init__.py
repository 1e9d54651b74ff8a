"""The engine layer: tensors in, tensors out, on one device (see `engine.py`), plus the style cache and `mambast bench`.

Public names are loaded lazily (PEP 562) so that importing `mambast_cli.engine.cache` or `.bench` for the CLI does
not import torch until a command actually needs it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import DEFAULT_STYLE_SIZE, Engine, StyleHandle, psnr

__all__ = ["Engine", "StyleHandle", "DEFAULT_STYLE_SIZE", "psnr"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
