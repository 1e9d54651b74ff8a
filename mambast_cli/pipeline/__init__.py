"""Folders → jobs → batches → outputs: plan everything, stream it through the engine, report.

Owns planning (plan.py), streaming execution (run.py), the contact sheet (sheet.py), the fake engine for tests
(fake.py) and the engine factory hook. Never prints: progress goes through an ``on_event`` callback, results
through a :class:`Report`. Imports the engine lazily, so planning (and ``--dry-run``) never loads torch's model code.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from mambast_cli.pipeline.plan import Event, Plan, Source, plan_jobs
from mambast_cli.pipeline.run import Report, RunOptions, run_plan


def default_engine_factory(**kwargs: Any) -> Any:
    """Build the engine: the fake one when ``MAMBAST_FAKE_ENGINE`` is set (tests), else the real Engine.

    Args:
        **kwargs: Engine keyword arguments (weights, device, precision, seed, cache_dir, disk_cache).

    Returns:
        An engine object.
    """
    mode = os.environ.get("MAMBAST_FAKE_ENGINE")
    if mode:
        from mambast_cli.pipeline.fake import FakeEngine

        return FakeEngine(mode, **kwargs)
    from mambast_cli.engine import Engine

    return Engine(**kwargs)


# The hook: tests (or embedding applications) may replace it with any callable taking the same keywords.
engine_factory: Callable[..., Any] = default_engine_factory


def create_engine(**kwargs: Any) -> Any:
    """Build the run's engine through the current :data:`engine_factory` hook.

    Args:
        **kwargs: Engine keyword arguments.

    Returns:
        An engine object.
    """
    return engine_factory(**kwargs)


__all__ = ["Event", "Plan", "Report", "RunOptions", "Source", "create_engine", "default_engine_factory",
           "engine_factory", "plan_jobs", "run_plan"]
