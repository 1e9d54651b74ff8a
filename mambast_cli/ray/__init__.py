"""Run mambast on a Ray cluster through Ray Data (the ``ray`` extra: ``pip install 'mambast[ray]'``).

Public API: :func:`stylize_dataset` (a Ray Dataset or paths → outputs on shared storage), :func:`stylize_plan`
(what ``mambast stylize --ray ADDRESS`` calls) and :class:`StylizeActor` (the ``map_batches`` callable class, for
pipelines that build their own Dataset chain). ``python -m mambast_cli.ray`` is ``mambast stylize --ray auto``.
Importing this package does not import ray; calling a function does (UsageError with an install hint if missing).
See docs/scale.md.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mambast_cli.ray.data import StylizeActor, stylize_dataset, stylize_plan

__all__ = ["StylizeActor", "stylize_dataset", "stylize_plan"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mambast_cli.ray import data

        return getattr(data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
