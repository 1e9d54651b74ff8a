"""GraphCache bookkeeping on the CPU, with torch.cuda's graph API replaced by stand-ins: which call runs eagerly,
when a capture happens, that static inputs (pictures, style tensors) are refreshed before each replay, LRU
eviction, and that a failed capture marks the shape eager. Real capture and bit-identical replay are checked on the
GPU (scripts/check_graphs.py, tests/test_engine.py::test_cuda_graphs_give_the_eager_bytes_gpu)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import pytest
import torch

from mambast_cli.engine import graphs as G
from mambast_cli.model import StyleState
from mambast_cli.model.mambast import StyleBlockTensors


class _FakeGraph:
    """Replay re-runs the captured forward on the static inputs and writes into the captured output."""

    current: "_FakeGraph | None" = None

    def __init__(self) -> None:
        self.fn: Any = None

    def replay(self) -> None:
        self.fn()


@pytest.fixture
def fake_cuda(monkeypatch):
    class Stream:
        def __init__(self, device=None):
            pass

        def wait_stream(self, other):
            pass

    @contextmanager
    def graph(g, pool=None, capture_error_mode=None):
        _FakeGraph.current = g
        yield
        _FakeGraph.current = None

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextmanager(lambda: (yield))())
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: object())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)


def _style(v: float, L: int = 6) -> StyleState:
    return StyleState(torch.full((1, 4, 3), v), (2, 2), (2, 3), 0, [torch.arange(L)],
                      [StyleBlockTensors(torch.full((1, L, 3), v), torch.full((1, L, 3), v), torch.full((1, 4, L), v))])


def _cache(calls: list[str], fail: bool = False, max_graphs: int = 2) -> G.GraphCache:
    def forward(x: torch.Tensor, ss: StyleState) -> torch.Tensor:
        calls.append("capture" if _FakeGraph.current is not None else "eager")
        if fail and _FakeGraph.current is not None:
            raise RuntimeError("operation not permitted when stream is capturing")
        out = x * 2 + ss.blocks[0].u.mean()
        g = _FakeGraph.current
        if g is not None:                   # what a replay recomputes: the same ops on the static tensors
            g.fn = lambda: out.copy_(x * 2 + ss.blocks[0].u.mean())
        return out
    return G.GraphCache(forward, max_graphs=max_graphs)


def test_first_sight_is_eager_then_capture_then_replays_with_fresh_inputs(fake_cuda):
    calls: list[str] = []
    cache = _cache(calls)
    a, b = _style(1.0), _style(5.0)
    x1, x2, x3 = torch.rand(2, 3), torch.rand(2, 3), torch.rand(2, 3)
    assert cache(x1, a) is None                                  # first sight: the caller runs it eagerly
    out2 = cache(x2, a)                                          # second: warm-up + capture, then replay
    assert calls == ["eager", "capture"] and cache.stats == {"captures": 1, "replays": 1, "capture_failures": 0}
    torch.testing.assert_close(out2, x2 * 2 + 1.0)
    out3 = cache(x3, b)                                          # style changed: static style tensors refreshed
    torch.testing.assert_close(out3, x3 * 2 + 5.0)
    out3b = cache(x3, b)
    torch.testing.assert_close(out3b, out3)
    assert out3b.data_ptr() != out3.data_ptr()                   # each call returns its own copy
    assert cache.stats["replays"] == 3 and calls == ["eager", "capture"]


def test_other_shapes_are_separate_graphs_with_lru_eviction(fake_cuda):
    calls: list[str] = []
    cache = _cache(calls, max_graphs=1)
    s = _style(0.0)
    for shape in ((2, 3), (4, 3)):
        x = torch.rand(*shape)
        assert cache(x, s) is None
        assert cache(x, s) is not None
    assert len(cache.graphs) == 1 and cache.stats["captures"] == 2
    x = torch.rand(2, 3)                                         # evicted, but seen: captured again at once
    torch.testing.assert_close(cache(x, s), x * 2)
    assert cache.stats["captures"] == 3


def test_a_failed_capture_leaves_that_shape_eager(fake_cuda):
    calls: list[str] = []
    cache = _cache(calls, fail=True)
    s, x = _style(0.0), torch.rand(2, 3)
    assert cache(x, s) is None and cache(x, s) is None and cache(x, s) is None
    assert cache.stats["capture_failures"] == 1 and calls.count("capture") == 1
    cache.clear()                                                # after OOM the engine clears: failures stay
    assert cache(x, s) is None and cache.stats["capture_failures"] == 1


def test_clone_and_copy_style_are_deep():
    a, b = _style(1.0), _style(2.0)
    c = G.clone_style(a)
    assert c.blocks[0].u.data_ptr() != a.blocks[0].u.data_ptr()
    G.copy_style_(c, b)
    assert torch.equal(c.blocks[0].delta, b.blocks[0].delta) and torch.equal(c.memory, b.memory)
    assert torch.equal(a.blocks[0].u, torch.full_like(a.blocks[0].u, 1.0))   # the source is untouched
