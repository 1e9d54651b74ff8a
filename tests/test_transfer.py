"""mambast_cli.io.transfer on the CPU: the two upload buffers alternate, grow, and wait for the upload that last read
them (events stood in for by objects with `query`); CPU tensors pass through `download_async` untouched."""
from __future__ import annotations

import torch

from mambast_cli.io.transfer import PinnedPair, download_async, record_event, wait_event


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
    a = pair.take((2, 4, 4, 3))
    a.fill_(1)
    ev_a = _Event(polls=3)
    pair.uploaded(ev_a)
    b = pair.take((2, 4, 4, 3))
    assert b.data_ptr() != a.data_ptr() and ev_a.queried == 0     # the other buffer: nothing to wait for
    pair.uploaded(None)
    a2 = pair.take((1, 4, 4, 3))                                  # back to the first: waits for its upload
    assert ev_a.queried == 4 and a2.data_ptr() == a.data_ptr() and a2.shape == (1, 4, 4, 3)
    pair.uploaded(None)
    pair.take((2, 4, 4, 3))
    pair.uploaded(None)
    big = pair.take((3, 4, 4, 3))                                 # grown: a new allocation for that buffer only
    assert big.shape == (3, 4, 4, 3) and allocs == [96, 96, 144]


def test_cpu_tensors_need_no_events() -> None:
    t = torch.arange(12, dtype=torch.uint8).view(2, 2, 3)
    host, ev = download_async(t)
    assert host is t and ev is None and record_event(t) is None
    wait_event(None)
