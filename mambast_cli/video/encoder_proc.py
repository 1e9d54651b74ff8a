"""A video writer whose encoder runs in a child process, so libx264 does not compete for the GIL.

Why: PyAV's RGB→YUV conversion and libx264 encoding hold Python's GIL for much of their time
(`scripts/probe_av_gil.py`: a Python loop beside them runs at 13–33 % of its speed). In the video job the encode
thread then stalls the thread that launches the model's GPU kernels, and the two do not overlap (docs/video.md,
Speed). Here the parent only sends bytes down a pipe (the GIL is released while the pipe write blocks) and a child
process, with its own GIL, owns the :class:`~mambast_cli.video.io.VideoWriter`.

Status: opt-in (env ``MAMBAST_VIDEO_ENCODER=process``); the default is the encode thread. Measured on an H100 host
(16 cores, 1080p, BENCHMARKS.md session 4) the first version was slower than the thread: 22.0 vs 24.6 fps, because
the 6 MB per frame it sent through the pipe cost more than the GIL contention it removed. Since session 6 frames go
through shared memory (a ring of `SLOTS` frames; only a slot number crosses the pipe) and, where the output takes
them, as the YUV 4:2:0 planes made on the GPU (half the bytes; `yuv420_layout`, as VideoWriter). Same interface as
VideoWriter (write, write_yuv420, yuv420_layout, mux_copy, commit, abort, stats, tmp, final) and the same
guarantees: the output appears only at commit (temp name + rename, done by the child), abort removes the temp file,
and a child left behind by a killed parent notices, removes its temp file and exits.

Protocol (parent → child on one pipe): ("ring", name, slot_bytes) once, then ("frame", slot, pts, shape, yuv) for a
frame in slot `slot` of the ring; ("frame", None, pts, shape, yuv) followed by the raw bytes when a frame does not fit
a slot; ("copy", index, fields) for a remuxed packet (`ring.packet_fields`); ("commit",); ("abort",).
Child → parent: ("ready", tmp, warnings, layout) once the output is open, ("free", slot) when a slot's frame is
encoded, ("done", stats) after commit, ("error", class, message, hint).
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any

from mambast_cli.errors import InputError, MambastError, OutputError, UsageError
from mambast_cli.video import ring

_ERRORS: dict[str, type[MambastError]] = {"OutputError": OutputError, "UsageError": UsageError,
                                          "InputError": InputError}
#: frames in flight between the parent and the encoder (a 1080p ring: 8 × 3.1 MB of YUV planes, or 8 × 6.2 MB RGB)
SLOTS = 8


def encoder_mode() -> str:
    """'process' when env MAMBAST_VIDEO_ENCODER=process, else 'thread' (the default)."""
    return "process" if os.environ.get("MAMBAST_VIDEO_ENCODER", "").lower() == "process" else "thread"


def _error_message(e: BaseException) -> tuple[str, str, str, str | None]:
    name = type(e).__name__ if isinstance(e, MambastError) else "OutputError"
    msg = str(e) if isinstance(e, MambastError) else f"video encoder failed: {type(e).__name__}: {e}"
    return ("error", name, msg, getattr(e, "hint", None))


def _child_main(cmd: Any, res: Any, final: str, info: Any, width: int, height: int, kwargs: dict) -> None:
    """The child process: open the VideoWriter, then serve the parent's messages until commit or abort."""
    import numpy as np

    from mambast_cli.video.io import VideoWriter

    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C goes to the parent, which then sends "abort"
    warnings: list[str] = []
    try:
        writer = VideoWriter(final, info, width=width, height=height, on_warning=warnings.append, **kwargs)
    except BaseException as e:  # noqa: BLE001  reported to the parent
        res.send(_error_message(e))
        return
    res.send(("ready", writer.tmp, warnings, writer.yuv420_layout()))
    parent = os.getppid()
    buf = bytearray()
    shm: Any = None
    slot_bytes = 0
    try:
        while True:
            while not cmd.poll(1.0):
                if os.getppid() != parent:               # the parent was killed: clean up and go
                    writer.abort()
                    return
            msg = cmd.recv()
            kind = msg[0]
            if kind == "ring":
                shm, slot_bytes = ring.attach(msg[1]), msg[2]
            elif kind == "frame":
                _, slot, pts, shape, yuv = msg
                if slot is None:                         # the bytes follow on the pipe
                    n = int(np.prod(shape))
                    if len(buf) != n:
                        buf = bytearray(n)
                    cmd.recv_bytes_into(buf)
                    frame = np.frombuffer(buf, dtype=np.uint8).reshape(shape)
                else:
                    frame = ring.slot(shm, slot, slot_bytes, shape)
                (writer.write_yuv420 if yuv else writer.write)(frame, pts)   # both copy the frame out
                del frame
                if slot is not None:
                    res.send(("free", slot))
            elif kind == "copy":
                writer.mux_copy(msg[1], ring.packet_from_fields(msg[2]))
            elif kind == "commit":
                writer.commit()
                res.send(("done", dict(writer.stats)))
                return
            else:                                        # "abort"
                writer.abort()
                return
    except BaseException as e:  # noqa: BLE001  EOF from a dead parent, an encoder or disk error
        writer.abort()
        try:
            res.send(_error_message(e))
        except OSError:
            pass
    finally:
        if shm is not None:
            shm.close()


def _widen_pipe(fd: int, size: int = 1 << 20) -> None:
    """Ask Linux for a 1 MiB pipe buffer (default 64 KiB): a 1080p frame then crosses in 6 writes instead of 95,
    each of which gives up and retakes the GIL. Best effort: other systems, or a lower pipe-max-size, keep theirs."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError):
        pass


class ProcessVideoWriter:
    """VideoWriter's interface, with the encoding done in a child process (see the module docstring).

    Not thread-safe: one thread calls write/mux_copy/commit/abort (as for VideoWriter).
    """

    def __init__(self, final: str | os.PathLike[str], info: Any, *, width: int, height: int,
                 on_warning: Any = None, **kwargs: Any) -> None:
        """Start the child and open the output there; the arguments are VideoWriter's.

        Raises:
            UsageError, OutputError: as VideoWriter (relayed from the child).
        """
        import multiprocessing as mp

        self.final = os.fspath(final)
        self.width, self.height = width, height
        self.stats: dict[str, float] = {"encode_s": 0.0}
        self.tmp: str | None = None
        ctx = mp.get_context("spawn")                     # never fork a process that holds CUDA
        cmd_r, self._cmd = ctx.Pipe(duplex=False)
        _widen_pipe(self._cmd.fileno())
        self._res, res_w = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child_main, name="mambast-encoder", daemon=True,
                                 args=(cmd_r, res_w, self.final, info, width, height, kwargs))
        self._proc.start()
        cmd_r.close()
        res_w.close()
        self._done = False
        self._ring: Any = None             # created with the first frame (its size is the frame's)
        self._slot_bytes = 0
        self._free: list[int] = []
        self._layout: tuple[int, bool] | None = None
        msg = self._reply()
        if msg[0] == "ready":
            self.tmp, self._layout = msg[1], msg[3]
            for w in msg[2]:
                if on_warning:
                    on_warning(w)

    def _reply(self) -> tuple:
        """The child's next message other than "free" (those return their slot to the ring); raises the child's
        error, or OutputError if it died without one."""
        while True:
            msg = self._next()
            if msg[0] != "free":
                return msg
            self._free.append(msg[1])

    def _next(self) -> tuple:
        while not self._res.poll(0.5):
            if not self._proc.is_alive() and not self._res.poll(0):
                self._done = True
                raise OutputError(f"cannot write {self.final}: the encoder process exited "
                                  f"(code {self._proc.exitcode})")
        try:
            msg = self._res.recv()
        except EOFError:
            self._done = True
            raise OutputError(f"cannot write {self.final}: the encoder process exited") from None
        if msg[0] == "error":
            self._done = True
            self._proc.join(timeout=10)
            raise _ERRORS.get(msg[1], OutputError)(msg[2], hint=msg[3])
        return msg

    def _collect_free(self, wait: bool) -> None:
        """Take back the slots the child has freed (with `wait`, block until at least one is free); the child's
        error, if it reported one, is raised here."""
        while self._res.poll(0) or (wait and not self._free):
            if self._done:
                raise OutputError(f"cannot write {self.final}: the encoder process has stopped")
            msg = self._next()
            if msg[0] != "free":
                raise OutputError(f"cannot write {self.final}: unexpected message from the encoder: {msg[0]}")
            self._free.append(msg[1])

    def _send(self, msg: tuple, payload: Any = None) -> None:
        if self._done:
            raise OutputError(f"cannot write {self.final}: the encoder process has stopped")
        self._collect_free(wait=False)                   # freed slots, or an error the child reported since
        try:
            self._cmd.send(msg)
            if payload is not None:
                self._cmd.send_bytes(payload)
        except (BrokenPipeError, EOFError, OSError):
            if self._res.poll(1.0):
                self._reply()
            self._done = True
            raise OutputError(f"cannot write {self.final}: the encoder process exited") from None

    def write(self, image: Any, pts: int) -> None:
        """Send one RGB frame ((H, W, 3) uint8, at least the encoder size; cropped here) to the encoder."""
        if image.shape[0] != self.height or image.shape[1] != self.width:
            image = image[: self.height, : self.width]
        self._frame(image, pts, yuv=False)

    def yuv420_layout(self) -> tuple[int, bool] | None:
        """As `VideoWriter.yuv420_layout` (the child's writer answered it when it opened the output)."""
        return self._layout

    def write_yuv420(self, planes: Any, pts: int) -> None:
        """Send one frame as YUV 4:2:0 planes ((height * 3 // 2, width) uint8; see `VideoWriter.write_yuv420`)."""
        self._frame(planes, pts, yuv=True)

    def _frame(self, frame: Any, pts: int, *, yuv: bool) -> None:
        """Copy the frame into a free slot of the ring (waiting for the child to free one) and send its number; a
        frame larger than a slot goes down the pipe instead."""
        import numpy as np

        t0 = time.perf_counter()
        if self._ring is None and not self._done:
            self._slot_bytes = int(frame.nbytes)
            self._ring = ring.create(SLOTS * self._slot_bytes)
            self._free = list(range(SLOTS))
            self._send(("ring", self._ring.name, self._slot_bytes))
        if frame.nbytes > self._slot_bytes:
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            self._send(("frame", None, pts, frame.shape, yuv), memoryview(frame).cast("B"))
            return
        self._collect_free(wait=True)                    # all slots in flight: wait for the child to free one
        slot = self._free.pop()
        self.stats["slot_wait_s"] = self.stats.get("slot_wait_s", 0.0) + time.perf_counter() - t0
        view = ring.slot(self._ring, slot, self._slot_bytes, frame.shape)
        np.copyto(view, frame)                           # one copy; numpy releases the GIL for it
        del view
        self._send(("frame", slot, pts, frame.shape, yuv))

    def mux_copy(self, index: int, packet: Any) -> None:
        """Send one packet of a copied stream (already time-shifted) to be remuxed."""
        self._send(("copy", index, ring.packet_fields(packet)))

    def commit(self) -> None:
        """Flush, close and rename in the child; returns when the output is in place.

        Raises:
            OutputError: the child could not finish (its temporary file is removed).
        """
        t0 = time.perf_counter()
        try:
            self._send(("commit",))
            msg = self._reply()
        finally:
            self._done = True
        self._proc.join(timeout=30)
        self._release_ring()
        self.stats.update(msg[1])
        self.stats["commit_wait_s"] = time.perf_counter() - t0

    def abort(self) -> None:
        """Stop the child and remove the temporary file (safe to call twice)."""
        if not self._done:
            self._done = True
            try:
                self._cmd.send(("abort",))
            except OSError:
                pass
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)
        self._release_ring()
        if self.tmp:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass

    def _release_ring(self) -> None:
        if self._ring is not None:
            r, self._ring = self._ring, None
            ring.release(r)


def make_writer(final: str | os.PathLike[str], info: Any, **kwargs: Any) -> Any:
    """A VideoWriter, or a ProcessVideoWriter when `encoder_mode()` is 'process' (not inside a daemonic process,
    such as a `--devices` worker, which may not start children: there the encode thread is used)."""
    import multiprocessing as mp

    if encoder_mode() == "process" and not mp.current_process().daemon:
        return ProcessVideoWriter(final, info, **kwargs)
    from mambast_cli.video.io import VideoWriter

    return VideoWriter(final, info, **kwargs)
