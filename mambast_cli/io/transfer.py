"""Host ↔ GPU transfers for the pipelines, without making the calling thread wait for the GPU.

Owns: CUDA events as "this copy is done" tokens (`record_event`, `wait_event`), the asynchronous copy of a batch
of uint8 pictures back to pinned host memory (`download_async`), and `PinnedPair`, two reusable pinned upload
buffers used in turn. Why: the thread that launches the model's kernels should queue work and go on; whoever needs
the bytes waits for an event, polling so that it never holds the GIL while it waits.

Every function also takes CPU tensors (events are then None and waiting is free), so the pipelines run unchanged
on a CPU engine and in tests.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any

__all__ = ["PinnedPair", "copy_streams", "download_async", "record_event", "timing_mark", "upload_async",
           "wait_event"]

_SIDE_STREAMS: dict[tuple[int, str], Any] = {}


def copy_streams() -> bool:
    """Whether uploads and downloads run on copy streams of their own (env ``MAMBAST_COPY_STREAMS=1``; off by
    default until a GPU lease has timed it and compared outputs). On the model's stream a batch's upload and the
    previous batch's download wait for its compute and the other way round; on their own streams they can overlap
    it. Expected gain: small. The pipelines move uint8 (a 1080p frame up, ~6 MB, and its YUV planes back, ~3 MB:
    ~0.2 ms of the ~16 GPU-ms a frame takes); session 10's profile showed 0.9 ms a frame only because its harness
    moves float32 pictures."""
    return os.environ.get("MAMBAST_COPY_STREAMS", "0") == "1"


def _side_stream(device: Any, kind: str) -> Any:
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    s = _SIDE_STREAMS.get((index, kind))
    if s is None:
        s = _SIDE_STREAMS[(index, kind)] = torch.cuda.Stream(device=torch.device("cuda", index))
    return s


def upload_async(host: Any, device: Any) -> Any:
    """Copy a host tensor to `device` without blocking the caller: pinned memory is copied asynchronously, on a copy
    stream of its own when :func:`copy_streams` says so (the current stream then waits for the copy, and the result
    is marked as used there, so the allocator keeps it until the current stream's work is done).

    Args:
        host: the tensor (pinned for an asynchronous copy).
        device: the target torch.device.

    Returns:
        The tensor on `device`, safe to use on the current stream.
    """
    import torch

    if getattr(device, "type", None) != "cuda" or not host.is_pinned() or not copy_streams():
        return host.to(device, non_blocking=host.is_pinned())
    cur = torch.cuda.current_stream(device)
    side = _side_stream(device, "h2d")
    with torch.cuda.stream(side):
        x = host.to(device, non_blocking=True)
    cur.wait_stream(side)
    x.record_stream(cur)
    return x


def record_event(t: Any, timing: bool = False) -> Any:
    """A CUDA event recorded now on the current stream of t's device (None for a CPU tensor).

    Args:
        t: a tensor whose device's stream to mark.
        timing: make the event carry a GPU time stamp (for ``elapsed_time``; costs a little).

    Returns:
        The event, or None.
    """
    if not t.is_cuda:
        return None
    return _recorded(t.device, timing)


def timing_mark(device: Any) -> Any:
    """A timing CUDA event recorded now on `device`'s current stream, to time GPU work from here on with
    ``elapsed_time`` (None for a CPU device).

    Args:
        device: a torch.device.
    """
    if getattr(device, "type", None) != "cuda":
        return None
    return _recorded(device, True)


def _recorded(device: Any, timing: bool) -> Any:
    import torch

    ev = torch.cuda.Event(enable_timing=timing)
    ev.record(torch.cuda.current_stream(device))
    return ev


def wait_event(ev: Any) -> None:
    """Wait for a CUDA event by polling (`query` never holds the GIL for long; a blocking synchronize might).

    Args:
        ev: from :func:`record_event` (None: returns at once).
    """
    if ev is None:
        return
    while not ev.query():
        time.sleep(0.0002)


def download_async(u8: Any, timing: bool = False) -> tuple[Any, Any]:
    """Queue the copy of a device tensor into fresh pinned host memory; return at once.

    Args:
        u8: the tensor to bring back (any dtype; on the CPU it is returned as it is).
        timing: the returned event carries a GPU time stamp (see `record_event`).

    Returns:
        ``(host, event)``: the host tensor, whose contents are valid once ``wait_event(event)`` returned (event
        None for a CPU input).
    """
    import torch

    if not u8.is_cuda:
        return u8, None
    host = torch.empty(u8.shape, dtype=u8.dtype, pin_memory=True)
    if not copy_streams():
        host.copy_(u8, non_blocking=True)
        return host, record_event(u8, timing)
    side = _side_stream(u8.device, "d2h")          # the copy starts once the current stream has made u8
    side.wait_stream(torch.cuda.current_stream(u8.device))
    with torch.cuda.stream(side):
        host.copy_(u8, non_blocking=True)
        ev = _recorded(u8.device, timing)           # on `side`, the current stream here
    u8.record_stream(side)                          # its memory is not reused before the copy has read it
    return host, ev


class PinnedPair:
    """Two pinned uint8 upload buffers used in turn, each grown to the largest batch asked for.

    While the GPU copies batch k from one buffer, the caller fills the other with batch k+1. Before handing out a
    buffer again, `take` waits for the upload that last read it (the event given to `uploaded` for that slot), so
    the caller may refill it without synchronising the device. The slot is explicit because the event may be
    recorded on another thread after the next buffer has been taken (the image pipeline's engine thread).

    Example:
        >>> pair = PinnedPair()                                           # doctest: +SKIP
        >>> host, slot = pair.take((16, 1080, 1920, 3))   # waits for the upload that used this slot two turns ago
        >>> torch.stack(frames, out=host); x = host.to("cuda", non_blocking=True)
        >>> pair.uploaded(slot, record_event(x))
    """

    def __init__(self, allocate: Any = None) -> None:
        """Args:
            allocate: ``allocate(nbytes) -> flat uint8 tensor or None`` (default: pinned memory where CUDA is, else
                plain memory; tests pass plain memory; None means no buffer can be had, see `take`).
        """
        self._allocate = allocate or _pinned_empty
        self._bufs: list[Any] = [None, None]
        self._ready: list[Any] = [None, None]
        self._turn = 1

    def reserve(self, shape: tuple[int, ...]) -> None:
        """Allocate both buffers for batches of `shape` now, so that the first `take` does not pin memory (pinning
        ~100 MB for 16 1080p frames takes tens of ms; the video job does it while the first frames decode). A buffer
        already that large, or in use, is left alone; a failed allocation is left for `take` to report.

        Args:
            shape: the batch's shape, e.g. (16, 1080, 1920, 3).
        """
        nbytes = math.prod(int(d) for d in shape)
        for k in (0, 1):
            if self._ready[k] is None:
                self._grow(k, nbytes)

    def take(self, shape: tuple[int, ...]) -> tuple[Any, int] | None:
        """The next buffer, viewed as a uint8 tensor of `shape` (its contents are undefined), and its slot.

        Args:
            shape: the batch's shape, e.g. (B, H, W, 3).

        Returns:
            ``(tensor, slot)``, or None when `allocate` could not provide the memory.
        """
        nbytes = math.prod(int(d) for d in shape)
        k = self._turn = 1 - self._turn
        wait_event(self._ready[k])
        self._ready[k] = None
        if not self._grow(k, nbytes):
            return None
        return self._bufs[k][:nbytes].view(*shape), k

    def _grow(self, k: int, nbytes: int) -> bool:
        """Make buffer `k` hold at least `nbytes` (the old one freed before a bigger one is pinned); False when
        `allocate` could not provide the memory."""
        if self._bufs[k] is None or self._bufs[k].numel() < nbytes:
            self._bufs[k] = None
            self._bufs[k] = self._allocate(nbytes)
        return self._bufs[k] is not None

    def uploaded(self, slot: int, event: Any) -> None:
        """Record the event after which the GPU no longer reads the buffer of `slot`.

        Args:
            slot: from `take`.
            event: from :func:`record_event` (None: nothing to wait for).
        """
        self._ready[slot] = event


def _pinned_empty(nbytes: int) -> Any:
    import torch

    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=torch.cuda.is_available())
