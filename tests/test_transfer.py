"""mambast_cli.io.transfer on the CPU: the two upload buffers alternate, grow, and wait for the upload that last read
them (events stood in for by objects with `query`); CPU tensors pass through `download_async` untouched."""
from __future__ import annotations

import torch

from mambast_cli.io.transfer import PinnedPair, copy_streams, download_async, record_event, upload_async, wait_event


class _Event:
    """Completes after `polls` queries."""

    def __init__(self, polls: int) -> None:
        self.polls, self.queried = polls, 0

    def query(self) -> bool:
        self.queried += 1
        return self.queried > self.polls


def test_pinned_pair_alternates_grows_and_waits() -> None:
    allocs: list[int] = []
    pair = PinnedPair(allocate=lambda n: allocs.append(n) or torch.empty(n, dtype=torch.uint8))
    a, sa = pair.take((2, 4, 4, 3))
    a.fill_(1)
    ev_a = _Event(polls=3)
    b, sb = pair.take((2, 4, 4, 3))
    pair.uploaded(sa, ev_a)                                        # recorded after the next buffer was taken
    assert b.data_ptr() != a.data_ptr() and sb != sa and ev_a.queried == 0   # the other buffer: nothing to wait for
    pair.uploaded(sb, None)
    a2, s2 = pair.take((1, 4, 4, 3))                               # back to the first: waits for its upload
    assert ev_a.queried == 4 and a2.data_ptr() == a.data_ptr() and a2.shape == (1, 4, 4, 3) and s2 == sa
    pair.take((2, 4, 4, 3))
    big, _ = pair.take((3, 4, 4, 3))                               # grown: a new allocation for that buffer only
    assert big.shape == (3, 4, 4, 3) and allocs == [96, 96, 144]


def test_pinned_pair_reserve_allocates_both_buffers_ahead() -> None:
    allocs: list[int] = []
    pair = PinnedPair(allocate=lambda n: allocs.append(n) or torch.empty(n, dtype=torch.uint8))
    pair.reserve((2, 4, 4, 3))
    assert allocs == [96, 96]
    a, _ = pair.take((2, 4, 4, 3))
    b, _ = pair.take((1, 4, 4, 3))                                 # smaller batches fit: nothing pinned on the way
    pair.reserve((2, 4, 4, 3))
    assert allocs == [96, 96] and a.data_ptr() != b.data_ptr()
    pair.reserve((3, 4, 4, 3))                                     # larger: both grow
    assert allocs == [96, 96, 144, 144]
    PinnedPair(allocate=lambda n: None).reserve((1, 2, 2, 3))      # no memory: left for take to report


def test_pinned_pair_without_memory_gives_none() -> None:
    assert PinnedPair(allocate=lambda n: None).take((1, 2, 2, 3)) is None


def test_cpu_tensors_need_no_events() -> None:
    t = torch.arange(12, dtype=torch.uint8).view(2, 2, 3)
    host, ev = download_async(t)
    assert host is t and ev is None and record_event(t) is None
    wait_event(None)


def test_copy_streams_are_opt_in_and_leave_cpu_tensors_alone(monkeypatch) -> None:
    """MAMBAST_COPY_STREAMS=1 moves CUDA copies to streams of their own (checked on a GPU by
    scripts/device/lease_k.sh); CPU tensors go through both helpers unchanged either way."""
    monkeypatch.delenv("MAMBAST_COPY_STREAMS", raising=False)
    assert not copy_streams()
    monkeypatch.setenv("MAMBAST_COPY_STREAMS", "1")
    assert copy_streams()
    t = torch.arange(24, dtype=torch.uint8).view(2, 2, 2, 3)
    assert torch.equal(upload_async(t, torch.device("cpu")), t)
    host, ev = download_async(t)
    assert host is t and ev is None
