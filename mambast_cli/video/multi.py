"""`mambast video --devices`: whole videos spread over one worker process per device, with work stealing.

Owns the multi-device video run: spawning the workers, sharing the style encoding, handing out input files one at
a time, turning the workers' messages into the same events and VideoReport as :func:`mambast_cli.video.run_videos`,
and failing only the file a dead worker held. Must not print (events go to ``on_event``) nor pick exit codes.
The process plumbing (device list, error transport, stop flags, engine start-up in a worker) comes from
mambast_cli.pipeline.multi, the same as ``mambast stylize --devices``.

How a run goes:
1. The parent plans the run exactly like a one-device run (:func:`mambast_cli.video.run.prepare_run`: output names,
   skip-existing) and never loads the model. With fewer files to do than devices, it says so in a ``note`` event and
   starts only as many workers as there are files (a file is the unit of work: one video is not split over devices).
2. Each worker (``spawn`` start method: CUDA cannot be forked) builds its engine. Worker 0 also encodes the style;
   the engine writes it into the disk style cache (mambast_cli.engine.cache). Once every worker is ready, the parent
   says "go" and the other workers read the style from the cache instead of recomputing it (if the cache write
   failed, they encode it again: slower, same permutations, same result).
3. Work stealing: a worker asks for the next file whenever it finishes one, so a long video never holds up the
   others. Each worker runs the normal three-thread video pipeline (:func:`mambast_cli.video.run.process_video`) and
   writes its output itself, atomically; only events travel to the parent.

Failures: a bad input fails only itself (an ``error`` event; exit 1 in the CLI). A worker that cannot start is a note
and the others carry on; if none starts, its error is raised (exit 3). A style that cannot be read raises UsageError.
A worker that dies mid-video fails that file only (its temporary output is removed) and the others take the
remaining files. An OutputError (or any other run-stopping error) in a worker stops the run and is raised here.
Ctrl-C (or ``cancel``): every worker discards the video it is writing; KeyboardInterrupt is raised after they stopped.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable, Sequence

from mambast_cli.errors import DeviceError, InputError, MambastError, UsageError
from mambast_cli.io.files import FRAMES_DIR_NAME, PART_MARKER
from mambast_cli.pipeline.multi import (WORKER_RANK_ENV, StopFlag, WorkerLink, error_tuple, pump_workers,
                                        rebuild_error, send_to_worker, spawn_worker, start_worker_engine,
                                        worker_context)
from mambast_cli.video.run import (EventFn, ItemResult, VideoJob, VideoOptions, VideoReport, done_event,
                                   error_event, load_style, prepare_run, process_video)

__all__ = ["run_videos_multi"]

_STOP_GRACE_S = 60.0  # after Ctrl-C or a fatal error: how long workers get to discard their outputs in flight


# ----------------------------------------------------------------------------------------------------------------
# worker side


def _worker_main(rank: int, n_workers: int, device: str, conn: Connection, shared_stop: Any, jobs: list[VideoJob],
                 style: str, opts: VideoOptions, engine_kwargs: dict[str, Any], encode_first: bool,
                 factory: Callable[..., Any] | None) -> None:
    """One worker process: build the engine, (worker 0) encode the style, then stylise the files it is handed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent coordinates Ctrl-C through the shared stop flag
    os.environ[WORKER_RANK_ENV] = str(rank)
    stop = StopFlag(shared_stop)
    link = WorkerLink(conn, stop)
    send, recv = link.send, link.recv

    def stats(engine: Any) -> dict[str, int]:
        st = getattr(engine, "stats", None) or {}
        return {"style_encodes": int(st.get("style_encodes", 0))}

    try:
        try:
            engine = start_worker_engine(device, n_workers, engine_kwargs, factory)
        except MambastError as e:
            send(("fatal", error_tuple(e)))
            return
        handle: Any = None
        style_err = None
        if encode_first:
            try:
                handle = load_style(engine, style, opts.style_size)
            except MambastError as e:
                style_err = error_tuple(e)
        send(("ready", style_err))
        msg = recv()
        if msg is None or msg[0] != "go":
            send(("done", {"interrupted": False, **stats(engine)}))
            return
        interrupted = False
        while not stop.is_set():
            send(("want",))
            msg = recv()
            if msg is None or msg[0] != "job":
                break
            idx: int = msg[1]
            job = jobs[idx]
            if handle is None:
                handle = load_style(engine, style, opts.style_size)  # a disk-cache hit after worker 0's encode
            # a flag per video: process_video sets it when the video fails, which must not stop this worker
            cancel = StopFlag(shared_stop)
            try:
                res = process_video(job, engine, handle, opts, cancel=cancel,
                                    on_event=lambda ev, i=idx: send(("event", i, ev)))
            except InputError as e:
                send(("failed", idx, error_tuple(e)))
                continue
            except KeyboardInterrupt:
                interrupted = True
                break
            send(("result", idx, dataclasses.asdict(res)))
        send(("done", {"interrupted": interrupted, **stats(engine)}))
    except MambastError as e:  # OutputError, a device error mid-run: the run stops (as with one device)
        send(("fatal", error_tuple(e)))
    except BaseException as e:  # a bug or a CUDA error: tell the parent which, then die with the traceback
        send(("crash", f"{type(e).__name__}: {e}"))
        raise


# ----------------------------------------------------------------------------------------------------------------
# parent side


@dataclass
class _Worker:
    rank: int
    device: str
    proc: Any
    conn: Connection
    state: str = "loading"          # loading → ready → running → gone
    finished: bool = False          # sent "done"
    crash: str | None = None
    current: int | None = None      # the job it is working on


def _remove_temp_outputs(job: VideoJob, pid: int) -> None:
    """Remove the temporary output a killed worker (process ``pid``) left for ``job`` (see video.io's names)."""
    folder = os.path.dirname(job.output) or "."
    if job.sequence:
        pattern = os.path.join(glob.escape(folder), f".{FRAMES_DIR_NAME}{PART_MARKER}{pid}-*")
    else:
        pattern = os.path.join(glob.escape(folder), f".{glob.escape(os.path.basename(job.output))}{PART_MARKER}{pid}-*")
    for p in glob.glob(pattern):
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
        except OSError:
            pass


class _Parent:
    def __init__(self, jobs: list[VideoJob], todo: list[int], report: VideoReport, style: str,
                 devices: Sequence[str], engine_kwargs: dict[str, Any], opts: VideoOptions, emit: EventFn,
                 cancel: threading.Event | None, factory: Callable[..., Any] | None, start_method: str) -> None:
        self.jobs, self.report, self.style, self.devices = jobs, report, style, list(devices)
        self.engine_kwargs, self.opts, self.emit, self.cancel = engine_kwargs, opts, emit, cancel
        self.factory, self.start_method = factory, start_method
        self.queue: deque[int] = deque(todo)
        self.outstanding: set[int] = set(todo)
        self.workers: list[_Worker] = []
        self.fatal: MambastError | None = None
        self.interrupted = False
        self.start_errors: list[tuple[str, str, str | None]] = []
        self.style_error: tuple[str, str, str | None] | None = None
        self.style_encodes = 0
        self.shared_stop: Any = None

    # -- items ----------------------------------------------------------------------------------------------
    def finish(self, idx: int, res: ItemResult, event: dict[str, Any]) -> None:
        if idx not in self.outstanding:
            return  # already reported (cannot happen; never report a file twice)
        self.outstanding.discard(idx)
        self.report.items[idx] = res
        self.emit(event)

    def fail(self, idx: int, e: MambastError) -> None:
        self.finish(idx, ItemResult(self.jobs[idx].input, None, "failed", str(e)), error_event(self.jobs[idx], e))

    # -- workers --------------------------------------------------------------------------------------------
    def spawn(self) -> None:
        ctx = worker_context(self.start_method)
        self.shared_stop = ctx.Event()
        n = len(self.devices)
        for rank, dev in enumerate(self.devices):
            proc, conn = spawn_worker(
                ctx, _worker_main, f"mambast-video-worker-{rank}",
                lambda child, rank=rank, dev=dev: (rank, n, dev, child, self.shared_stop, self.jobs, self.style,
                                                   self.opts, self.engine_kwargs, rank == 0, self.factory))
            self.workers.append(_Worker(rank, dev, proc, conn))

    def send(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        send_to_worker(w.conn, msg)

    def stopping(self) -> bool:
        return self.fatal is not None or self.interrupted or bool(self.shared_stop and self.shared_stop.is_set())

    def handle(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "event":
            ev = dict(msg[2])
            if ev.get("event") == "start":
                ev["device"] = w.device
            self.emit(ev)
        elif kind == "result":
            res = ItemResult(**msg[2])
            w.current = None
            self.finish(msg[1], res, done_event(res))
        elif kind == "failed":
            w.current = None
            self.fail(msg[1], rebuild_error(msg[2]))
        elif kind == "want":
            if self.queue and not self.stopping():
                w.current = self.queue.popleft()
                self.send(w, ("job", w.current))
            else:
                self.send(w, ("end",))
        elif kind == "ready":
            w.state = "ready"
            if msg[1] is not None:
                self.style_error = msg[1]
        elif kind == "done":
            w.finished = True
            self.style_encodes += int(msg[1].get("style_encodes", 0))
            if msg[1].get("interrupted"):
                self.interrupted = True
                self.shared_stop.set()
        elif kind == "fatal":
            if w.state == "loading":
                self.start_errors.append(msg[1])
                w.finished = True
            else:
                if self.fatal is None:
                    self.fatal = rebuild_error(msg[1])
                self.shared_stop.set()
        elif kind == "crash":
            w.crash = msg[1]

    def gone(self, w: _Worker) -> None:
        """A worker's process ended: read what it still sent, then fail the file it held."""
        try:
            while w.conn.poll(0):
                self.handle(w, w.conn.recv())
        except (EOFError, OSError):
            pass
        w.proc.join(timeout=5)
        was_loading = w.state == "loading"
        w.state = "gone"
        idx, w.current = w.current, None
        if idx is not None:
            _remove_temp_outputs(self.jobs[idx], w.proc.pid)  # a killed worker cannot remove its own
        if w.finished or (self.stopping() and not was_loading):
            return  # a clean exit, or a stop (Ctrl-C, fatal error): the file in flight is dropped, not failed
        code = w.proc.exitcode
        why = w.crash or (f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}")
        if was_loading:
            self.start_errors.append(("DeviceError", f"worker on {w.device} stopped while starting ({why})", None))
            return
        self.emit({"event": "note", "input": None, "device": w.device,
                   "message": f"worker {w.rank} on {w.device} stopped ({why}); the other workers go on"})
        if idx is not None:
            self.fail(idx, DeviceError(f"{self.jobs[idx].input}: worker {w.rank} on {w.device} stopped ({why}) "
                                       "while this video was in flight",
                                       hint="run the same command again to retry it (finished outputs are skipped)"))

    def pump(self, timeout: float) -> None:
        """Wait for messages or exits, and handle them."""
        pump_workers(self.workers, self.handle, self.gone, timeout)
        if self.cancel is not None and self.cancel.is_set():
            self.interrupted = True
            self.shared_stop.set()

    def run(self) -> VideoReport:
        deadline: float | None = None
        try:
            self.spawn()
            # phase 1: engines load; worker 0 encodes the style into the disk cache
            while any(w.state == "loading" for w in self.workers) and not self.stopping():
                self.pump(0.2)
            ready = [w for w in self.workers if w.state == "ready"]
            if self.style_error is not None:
                raise rebuild_error(self.style_error)
            if not ready and not self.stopping():
                raise rebuild_error(self.start_errors[0]) if self.start_errors else DeviceError("no worker started")
            for err in self.start_errors:
                self.emit({"event": "note", "input": None,
                           "message": f"a worker could not start: {err[1]}; continuing with the others"})
            for w in ready:
                w.state = "running"
                self.send(w, ("go",))
            # phase 2: hand out files until every worker has finished or died
            while any(w.state != "gone" for w in self.workers):
                try:
                    if self.stopping() and deadline is None:
                        self.shared_stop.set()
                        deadline = time.monotonic() + _STOP_GRACE_S
                    if deadline is not None and time.monotonic() > deadline:
                        break
                    self.pump(0.2)
                except KeyboardInterrupt:
                    if self.interrupted:  # second Ctrl-C: stop waiting for the workers' clean-up
                        break
                    self.interrupted = True
                    self.shared_stop.set()
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            if self.shared_stop is not None:
                self.shared_stop.set()
            for w in self.workers:
                w.proc.join(timeout=10 if deadline is None else 2)
                if w.proc.is_alive():
                    w.proc.terminate()
                    w.proc.join(timeout=5)
                if w.current is not None:
                    _remove_temp_outputs(self.jobs[w.current], w.proc.pid)
                w.conn.close()
        self.report.style_encodes = self.style_encodes
        if self.fatal is not None:
            raise self.fatal
        if self.interrupted:
            raise KeyboardInterrupt
        for idx in sorted(self.outstanding):  # every worker is gone with files left: nothing else can run them
            self.fail(idx, DeviceError(f"{self.jobs[idx].input}: not processed: every worker stopped "
                                       "(see the errors above)", hint="run the same command again to retry it"))
        return self.report


def run_videos_multi(
    inputs: list[str | os.PathLike[str]], style: str | os.PathLike[str], devices: Sequence[str],
    engine_kwargs: dict[str, Any] | None = None, opts: VideoOptions | None = None, *,
    on_event: EventFn | None = None, cancel: threading.Event | None = None,
    factory: Callable[..., Any] | None = None, start_method: str = "spawn",
) -> VideoReport:
    """Stylise every input video with one style, whole files spread over several devices of this host.

    Args:
        inputs: files and/or folders.
        style: style image path.
        devices: one device string per worker (:func:`mambast_cli.pipeline.multi.parse_devices`).
        engine_kwargs: engine keywords except ``device`` (weights, precision, seed, cache_dir).
        opts: options, as for :func:`mambast_cli.video.run_videos` (each worker runs its own decoder and encoder).
        on_event: called in this process: "plan", "skip", "note" (fewer files than devices, a worker that stopped),
            then the workers' "start" (with the worker's ``device``), "progress", "warning", and one "done" or
            "error" per file; the same events as one device otherwise.
        cancel: an Event that stops the run when set (the outputs being written are discarded).
        factory: builds each worker's engine (picklable; default :func:`mambast_cli.pipeline.create_engine`, which
            gives the fake engine when ``MAMBAST_FAKE_ENGINE`` is set).
        start_method: multiprocessing start method (``spawn``; never ``fork`` with CUDA).

    Returns:
        The VideoReport (``ok`` False when some input failed), items in input order.

    Raises:
        UsageError: bad options, no inputs, no device, or the style cannot be read.
        WeightsError / DeviceError: no worker could start (the first worker's error).
        OutputError: a worker could not write its output (the run stops; finished outputs stay).
        KeyboardInterrupt: after Ctrl-C or ``cancel``, once the workers have discarded their outputs in flight.
    """
    if not devices:
        raise UsageError("no device given for a multi-device run")
    emit = on_event or (lambda e: None)
    opts = opts or VideoOptions()
    style = os.fspath(style)
    jobs, todo, report = prepare_run(inputs, style, opts, emit)
    if not todo:
        return report
    devices = list(devices)
    if len(todo) < len(devices):
        used = len(todo)
        emit({"event": "note", "input": None,
              "message": (f"only {used} of {len(devices)} devices used: one video is the unit of work (its frames are "
                          "not spread over devices)" if used == 1 else
                          f"only {used} of {len(devices)} devices used: one video per device")})
        devices = devices[:used]
    kwargs = dict(engine_kwargs or {})
    kwargs.pop("device", None)
    return _Parent(jobs, todo, report, style, devices, kwargs, opts, emit, cancel, factory, start_method).run()
