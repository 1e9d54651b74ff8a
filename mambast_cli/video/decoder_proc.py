"""The video reader in a child process, so PyAV's demuxing, decoding and RGB conversion do not compete for the GIL.

Why: `scripts/probe_av_gil.py` measured decoding and the reader's yuv420p → rgb24 conversion ~3× slower beside a
thread that runs Python (each needs the GIL back many times per frame), and in the video job the main thread, which
stacks batches and launches the model, is such a thread. Here a child process runs `video.io.read_frames` unchanged
and hands each frame over through a shared-memory ring (`video.ring`); only slot numbers and copied packets (audio,
subtitles) cross the pipe. The parent copies each frame out of its slot (numpy, GIL released) and frees the slot at
once, so frames can wait in the job's queues as long as they like.

Status: opt-in (env ``MAMBAST_VIDEO_DECODER=process``); the default is the reader thread. Same frames and packets as
`read_frames` (tested), the same InputError for a corrupt input; the child stops when the parent stops reading, and
exits on its own if the parent is killed.

Protocol (child → parent): ("frame", slot, pts) for a frame in slot `slot`; ("packet", index, fields) for a copied
packet (`ring.packet_fields`); ("end", decode_s); ("error", class, message, hint). Parent → child: ("free", slot).
When the parent stops reading (the end, an error, or the consumer let go) it terminates the child, which only reads.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any, Iterator

from mambast_cli.errors import InputError, MambastError
from mambast_cli.video import ring
from mambast_cli.video.encoder_proc import _ERRORS

__all__ = ["SLOTS", "decoder_mode", "read_frames_in_process"]

#: decoded frames the child may run ahead of the parent (1080p: 8 × 6.2 MB)
SLOTS = 8


def decoder_mode() -> str:
    """'process' when env MAMBAST_VIDEO_DECODER=process (and not inside a daemonic process, such as a `--devices`
    worker, which may not start children), else 'thread' (the default)."""
    import multiprocessing as mp

    if os.environ.get("MAMBAST_VIDEO_DECODER", "").lower() == "process" and not mp.current_process().daemon:
        return "process"
    return "thread"


def _child_main(cmd: Any, res: Any, name: str, slots: int, slot_bytes: int, info: Any, kw: dict) -> None:
    """The child: read_frames into the ring, packets down the pipe, until the end or an error (or the parent ends
    it)."""
    from mambast_cli.video.io import DecodedFrame, read_frames

    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C goes to the parent, which stops reading
    parent = os.getppid()
    shm = ring.attach(name)
    free = list(range(slots))
    stats: dict[str, float] = {}

    def wait_free() -> bool:
        """Collect freed slots; block until one is free. False: the parent is gone."""
        while not free or cmd.poll(0):
            if not cmd.poll(1.0):
                if os.getppid() != parent:
                    return False
                continue
            msg = cmd.recv()
            if msg[0] != "free":
                return False
            free.append(msg[1])
        return True

    try:
        for item in read_frames(info, stats=stats, **kw):
            if isinstance(item, DecodedFrame):
                if not wait_free():
                    return
                k = free.pop()
                view = ring.slot(shm, k, slot_bytes, item.image.shape)
                view[...] = item.image
                del view
                res.send(("frame", k, item.pts))
            else:
                res.send(("packet", item.index, ring.packet_fields(item.packet)))
        res.send(("end", stats.get("decode_s", 0.0)))
    except (BrokenPipeError, EOFError):
        pass                                             # the parent has gone
    except BaseException as e:  # noqa: BLE001  relayed to the parent
        if isinstance(e, MambastError):
            msg = ("error", type(e).__name__, str(e), e.hint)
        else:
            msg = ("error", "InputError", f"{info.path}: video decoder failed: {type(e).__name__}: {e}", None)
        try:
            res.send(msg)
        except OSError:
            pass
    finally:
        shm.close()


def read_frames_in_process(info: Any, *, size: tuple[int, int], start_s: float = 0.0,
                           duration_s: float | None = None, copy: bool = True,
                           stats: dict[str, float] | None = None) -> Iterator[Any]:
    """`video.io.read_frames`, run in a child process (arguments and items are the same).

    Raises:
        InputError: as read_frames (relayed from the child), or the child died.
    """
    import multiprocessing as mp

    import numpy as np

    from mambast_cli.video.io import CopiedPacket, DecodedFrame

    W, H = size
    slot_bytes = W * H * 3
    shm = ring.create(SLOTS * slot_bytes)
    ctx = mp.get_context("spawn")                     # never fork a process that holds CUDA
    cmd_r, cmd = ctx.Pipe(duplex=False)
    res, res_w = ctx.Pipe(duplex=False)
    kw = {"size": size, "start_s": start_s, "duration_s": duration_s, "copy": copy}
    proc = ctx.Process(target=_child_main, name="mambast-decoder", daemon=True,
                       args=(cmd_r, res_w, shm.name, SLOTS, slot_bytes, info, kw))
    proc.start()
    cmd_r.close()
    res_w.close()
    try:
        while True:
            while not res.poll(0.5):
                if not proc.is_alive() and not res.poll(0):
                    raise InputError(f"{info.path}: the decoder process exited (code {proc.exitcode})")
            try:
                msg = res.recv()
            except EOFError:
                raise InputError(f"{info.path}: the decoder process exited") from None
            kind = msg[0]
            if kind == "frame":
                _, k, pts = msg
                t0 = time.perf_counter()
                view = ring.slot(shm, k, slot_bytes, (H, W, 3))
                image = np.array(view)                   # our own copy: the slot goes back at once
                del view
                cmd.send(("free", k))
                if stats is not None:
                    stats["copy_s"] = stats.get("copy_s", 0.0) + time.perf_counter() - t0
                yield DecodedFrame(pts, image)
            elif kind == "packet":
                yield CopiedPacket(msg[1], ring.packet_from_fields(msg[2]))
            elif kind == "end":
                if stats is not None:
                    stats["decode_s"] = stats.get("decode_s", 0.0) + msg[1]
                return
            else:                                        # "error"
                raise _ERRORS.get(msg[1], InputError)(msg[2], hint=msg[3])
    finally:                                             # the end, an error, or the consumer stopped reading
        # the child only reads: stopping it at once is safe (it may be blocked sending a message nobody will read)
        if proc.is_alive():
            proc.terminate()
        proc.join(timeout=5)
        cmd.close()
        res.close()
        ring.release(shm)
