"""CUDA graphs of the engine's batch forward: one replay instead of ~1,000 Python-level kernel launches per batch.

Owns: `GraphCache`, which captures `forward(x, style_state) -> image` once per input shape and style-grid layout
and replays it. Why: in the image pipeline the thread that drives the GPU shares Python's GIL with the decode and
encode threads, and every PyTorch op releases and re-takes the GIL; on an H100 that thread was busy 6–9 ms per 512²
picture for 2.4 ms of GPU work (BENCHMARKS.md, session 4). A graph replay is one call.

How: the first batch of a shape runs eagerly (it tunes the scan and compiles the Triton kernels); the second one
warms up on a side stream, captures the forward into a graph whose input is a static copy of the batch and of the
style's laid-out tensors, and replays it. Later batches copy their pictures (and, when the style changed, the
style's tensors) into the static inputs, replay, and return a clone of the static output. Graphs share one memory
pool and replay one at a time, so several shapes cost about one forward's activations, plus `max_graphs` static
inputs/outputs. A capture that fails (an op that synchronises the host) marks that shape eager for the rest of the
run. The replayed kernels are the eager ones, so the pictures are the same bytes (checked on the GPU by
`tests/test_engine.py::test_cuda_graphs_give_the_eager_bytes_gpu`).

Invariants: CUDA only; called from one thread at a time (the engine's). No host synchronisation inside `forward`.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..model import StyleState
from ..model.mambast import StyleBlockTensors

__all__ = ["GraphCache", "clone_style", "copy_style_"]


def clone_style(ss: StyleState) -> StyleState:
    """A StyleState with its own copies of every tensor (the graph's static style input)."""
    return StyleState(ss.memory.clone(), tuple(ss.style_grid), tuple(ss.grid), ss.seed, [i.clone() for i in ss.indices],
                      [StyleBlockTensors(b.u.clone(), b.delta.clone(), b.B.clone()) for b in ss.blocks])


def copy_style_(dst: StyleState, src: StyleState) -> None:
    """Copy src's tensors into dst's (same shapes), in place."""
    dst.memory.copy_(src.memory)
    for a, b in zip(dst.indices, src.indices):
        a.copy_(b)
    for a, b in zip(dst.blocks, src.blocks):
        a.u.copy_(b.u)
        a.delta.copy_(b.delta)
        a.B.copy_(b.B)


def _style_signature(ss: StyleState) -> tuple[Any, ...]:
    return (tuple(ss.grid), tuple(ss.memory.shape), ss.memory.dtype,
            tuple((tuple(b.u.shape), tuple(b.delta.shape), tuple(b.B.shape), b.u.dtype) for b in ss.blocks))


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    x: torch.Tensor
    ss: StyleState
    out: torch.Tensor
    src: Callable[[], StyleState | None] | None = None     # weak reference to the StyleState last copied in


class GraphCache:
    """Captured forwards, keyed on (input shape, dtype, style layout shapes); LRU-bounded.

    Example:
        >>> graphs = GraphCache(lambda x, ss: model_forward(x, ss))     # doctest: +SKIP
        >>> out = graphs(x, ss)          # None on the first sight of a shape: run it eagerly yourself
    """

    def __init__(self, forward: Callable[[torch.Tensor, StyleState], torch.Tensor], max_graphs: int = 2) -> None:
        """Args:
            forward: the batch forward to capture (no host synchronisation in it).
            max_graphs: shapes kept captured at once (least recently used dropped first).
        """
        self.forward = forward
        self.max_graphs = int(max_graphs)
        self.graphs: OrderedDict[tuple[Any, ...], _Captured] = OrderedDict()
        self.seen: set[tuple[Any, ...]] = set()
        self.failed: set[tuple[Any, ...]] = set()
        self.pool: Any = None
        self.stats = {"captures": 0, "replays": 0, "capture_failures": 0}

    def clear(self) -> None:
        """Drop every graph (e.g. after an out-of-memory error); shapes are captured again when seen twice more."""
        self.graphs.clear()
        self.seen.clear()
        self.pool = None

    def __call__(self, x: torch.Tensor, ss: StyleState) -> torch.Tensor | None:
        """The forward's output for (x, ss) by replay, or None when the caller must run it eagerly (first sight of
        the shape, or a shape that cannot be captured)."""
        key = (tuple(x.shape), x.dtype, _style_signature(ss))
        if key in self.failed:
            return None
        cap = self.graphs.get(key)
        if cap is None:
            if key not in self.seen:
                self.seen.add(key)
                return None
            cap = self._capture(key, x, ss)
            if cap is None:
                return None
        else:
            self.graphs.move_to_end(key)
        cap.x.copy_(x)
        if cap.src is None or cap.src() is not ss:
            copy_style_(cap.ss, ss)
            cap.src = weakref.ref(ss)
        cap.graph.replay()
        self.stats["replays"] += 1
        return cap.out.clone()

    def _capture(self, key: tuple[Any, ...], x: torch.Tensor, ss: StyleState) -> _Captured | None:
        x_s, ss_s = x.clone(), clone_style(ss)
        try:
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):           # warm-up on a side stream (library handles, workspaces)
                self.forward(x_s, ss_s)
            torch.cuda.current_stream(x.device).wait_stream(side)
            # the graph's activations live in its own pool: hand back the eager batches' cached blocks first, so a
            # big shape (1080p video frames) does not need room for both
            torch.cuda.synchronize(x.device)
            torch.cuda.empty_cache()
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            # thread_local: only this thread's CUDA calls are checked during the capture, so decode/encode threads
            # that pin memory at the same time are not disturbed
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                out = self.forward(x_s, ss_s)
        except torch.OutOfMemoryError:
            raise
        except Exception:
            self.failed.add(key)
            self.stats["capture_failures"] += 1
            torch.cuda.synchronize(x.device)
            return None
        cap = _Captured(graph, x_s, ss_s, out, weakref.ref(ss))
        self.graphs[key] = cap
        self.stats["captures"] += 1
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        return cap
