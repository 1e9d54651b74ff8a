"""A ring of equal slots in shared memory, for frames between the video job and its helper processes (and the
form in which a copied packet crosses their pipes).

The parent owns the segment: `create` makes it, `release` unmaps and unlinks it. The child maps it with `attach`:
on Linux straight from /dev/shm, because attaching through `multiprocessing.shared_memory` would register the
segment with the resource tracker the child shares with the parent (before Python 3.13), which then unlinks it or
complains when both unregister it. If the parent is killed, its resource tracker unlinks the segment.
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["attach", "create", "packet_fields", "packet_from_fields", "release", "slot"]


def create(nbytes: int) -> Any:
    """A new shared-memory segment of ``nbytes`` (a `multiprocessing.shared_memory.SharedMemory`)."""
    from multiprocessing import shared_memory

    return shared_memory.SharedMemory(create=True, size=max(1, int(nbytes)))


def slot(ring: Any, index: int, slot_bytes: int, shape: tuple[int, ...]) -> Any:
    """A uint8 numpy view of slot ``index`` (``del`` it before `release` or the ring's ``close``)."""
    import numpy as np

    return np.ndarray(shape, dtype=np.uint8, buffer=ring.buf, offset=index * slot_bytes)


def release(ring: Any) -> None:
    """Unmap and unlink a segment made by `create` (views into it must be gone)."""
    ring.close()
    ring.unlink()


class _Mapped:
    """A segment mapped by `attach`, with SharedMemory's ``buf`` and ``close``."""

    def __init__(self, m: Any) -> None:
        self._m, self.buf = m, memoryview(m)

    def close(self) -> None:
        self.buf.release()
        self._m.close()


def attach(name: str) -> Any:
    """The child's mapping of the parent's segment ``name`` (an object with ``.buf`` and ``.close()``)."""
    import mmap

    path = os.path.join("/dev/shm", name.lstrip("/"))
    if os.path.exists(path):
        fd = os.open(path, os.O_RDWR)
        try:
            return _Mapped(mmap.mmap(fd, os.fstat(fd).st_size))
        finally:
            os.close(fd)
    from multiprocessing import shared_memory

    try:
        return shared_memory.SharedMemory(name=name, track=False)      # type: ignore[call-arg]  (Python ≥ 3.13)
    except TypeError:
        return shared_memory.SharedMemory(name=name)                  # may leave a tracker warning at exit


def packet_fields(packet: Any) -> tuple:
    """A PyAV packet as picklable fields: (data, pts, dts, time_base, keyframe, duration)."""
    return bytes(packet), packet.pts, packet.dts, packet.time_base, bool(packet.is_keyframe), packet.duration


def packet_from_fields(fields: tuple) -> Any:
    """The PyAV packet that `packet_fields` described."""
    import av

    data, pts, dts, tb, key, duration = fields
    pkt = av.Packet(data)
    pkt.pts, pkt.dts, pkt.time_base, pkt.is_keyframe = pts, dts, tb, key
    if duration:
        pkt.duration = duration
    return pkt
