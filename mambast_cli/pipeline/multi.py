"""Every device of one host: one worker process per device, fed small batches of planned jobs on demand.

Owns the multi-device run behind ``mambast stylize --devices``: spawning the workers, sharing the style encodings,
handing out work, collecting their events into one Report, and failing only the items a dead worker held.
Must not print (events go to ``on_event``, like :func:`mambast_cli.pipeline.run_plan`) and never picks exit codes.

How a run goes:
1. The parent (this module, in the ``mambast`` process) emits the plan's notes and skips, then spawns one worker
   per device (``torch.multiprocessing``'s ``spawn`` start method: CUDA cannot be forked). The parent never loads
   the model nor touches a GPU.
2. Each worker builds its engine on its device and encodes its share of the styles (styles ``rank::n``). The
   engine writes each style's memory into the disk style cache (mambast_cli.engine.cache: keyed on the style's
   bytes, its size and the weights), then the worker says "ready". Once every worker is ready, the parent says
   "go": from then on, a style another worker encoded is a disk-cache hit, so no GPU recomputes a style another
   one did (a style whose cache write failed is simply encoded again: slower, same result).
3. Work stealing: the jobs are cut into tasks of ``task_size`` contents (each with its pending styles). A worker
   asks the parent for a task whenever its decode window wants more, so a worker never holds more than its decode
   window plus one task, and a slow file (or a slow GPU) never idles the others. Inside a worker the normal
   streaming pipeline runs (mambast_cli.pipeline.run: decode threads, size buckets, OOM back-off, writer threads),
   fed from those tasks through ``run_plan(jobs=...)``.
4. Workers write their outputs themselves, atomically (``write_atomic``: hidden temporary file, fsync, rename), so
   encoded pictures never cross a process boundary; only events (one per item) travel back to the parent, which
   counts them into the Report and forwards them to ``on_event`` (progress bar, ``--json``).

Failures: a bad input is an ordinary per-item error inside its worker. A worker that cannot start (bad device,
CUDA error) is a note, and the others carry on; if none starts, its error is raised (exit 3, as with one device).
A worker that dies mid-run (CUDA error, killed process) fails only the items it had been handed and not yet
reported ("run again to retry them": finished outputs are skipped on the rerun); the others go on and take the
remaining tasks. An OutputError in any worker stops the run and is raised here. Ctrl-C: workers ignore SIGINT;
the parent sets the shared stop flag, workers let their writes in flight finish, and the Report is
``interrupted``. Every planned item gets at most one event (duplicates, which cannot happen, would be dropped).
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator, Sequence

from mambast_cli import errors as _errors
from mambast_cli.errors import DeviceError, MambastError, OutputError, UsageError
from mambast_cli.io import discard_parts
from mambast_cli.pipeline.plan import Event, Plan
from mambast_cli.pipeline.run import EventCallback, Report, RunOptions, encode_style_source, run_plan, usable_cpus

__all__ = ["WORKER_RANK_ENV", "StopFlag", "WorkerLink", "error_tuple", "parse_devices", "pump_workers",
           "rebuild_error", "run_plan_multi", "send_to_worker", "spawn_worker", "start_worker_engine", "worker_context"]

WORKER_RANK_ENV = "MAMBAST_WORKER_RANK"
"""Set in each worker's environment to its rank (0, 1, ...), for logs and the fake engine's ``die`` mode."""

_STOP_GRACE_S = 60.0  # after Ctrl-C or a fatal error: how long workers get to finish their writes


def parse_devices(spec: str) -> list[str]:
    """Turn a ``--devices`` value into one device string per worker.

    Args:
        spec: ``all`` (every visible GPU), GPU indices ``0,1,3``, device names ``cuda:0,cuda:2``, or ``cpu,cpu``
            (N CPU workers; for tests and GPU-less machines). A device may be repeated (two workers share it).

    Returns:
        Device strings such as ``["cuda:0", "cuda:1"]``.

    Raises:
        UsageError: an entry is not a device.
        DeviceError: CUDA is needed but absent, or an index does not exist.
    """
    s = spec.strip().lower()
    if not s:
        raise UsageError("--devices is empty", hint="use all, 0,1,3 or cpu,cpu")
    import torch

    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if s == "all":
        if n_cuda == 0:
            raise DeviceError("--devices all: no CUDA device is visible", hint="use --device cpu, or check nvidia-smi")
        return [f"cuda:{i}" for i in range(n_cuda)]
    out: list[str] = []
    for raw in s.split(","):
        item = raw.strip()
        if item == "cpu":
            out.append("cpu")
            continue
        idx = item[5:] if item.startswith("cuda:") else item
        if not idx.isdigit():
            raise UsageError(f"--devices: {raw.strip()!r} is not a device", hint="use all, GPU indices like 0,1,3, or cpu,cpu")
        i = int(idx)
        if n_cuda == 0:
            raise DeviceError(f"--devices: GPU {i} requested but CUDA is not available", hint="use --device cpu")
        if i >= n_cuda:
            raise DeviceError(f"--devices: GPU {i} requested but only {n_cuda} GPU(s) are visible",
                              hint=f"use indices 0 … {n_cuda - 1}")
        out.append(f"cuda:{i}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# worker side


# Small helpers shared with other multi-process runners (mambast_cli.video.multi).


def error_tuple(e: BaseException) -> tuple[str, str, str | None]:
    """A picklable form of an error, to send from a worker to the parent.

    Args:
        e: the error.

    Returns:
        ``(class name, message, hint)``.
    """
    return type(e).__name__, str(e), getattr(e, "hint", None)


def rebuild_error(t: tuple[str, str, str | None]) -> MambastError:
    """The MambastError that :func:`error_tuple` described (its class when it is one of mambast_cli.errors).

    Args:
        t: ``(class name, message, hint)``.

    Returns:
        The error, ready to raise (same exit code as in the worker).
    """
    cls = getattr(_errors, t[0], None)
    if not (isinstance(cls, type) and issubclass(cls, MambastError)):
        cls = MambastError
    return cls(t[1], hint=t[2])


class StopFlag:
    """A worker's stop flag: the run-wide (shared) one, or a local one (lost parent, fatal error, one item's end)."""

    def __init__(self, shared: Any) -> None:
        """Wrap the run-wide flag.

        Args:
            shared: the run-wide event (a multiprocessing Event); setting this flag never sets it.
        """
        self.shared = shared
        self.local = threading.Event()

    def is_set(self) -> bool:
        """True when the run or this flag was stopped."""
        return self.local.is_set() or self.shared.is_set()

    def set(self) -> None:
        """Stop this flag only."""
        self.local.set()


def start_worker_engine(device: str, n_workers: int, engine_kwargs: dict[str, Any],
                        factory: Callable[..., Any] | None) -> Any:
    """Inside a worker process: share the CPU fairly, pin the GPU, and build the engine on ``device``.

    Args:
        device: the worker's device (``cpu``, ``cuda:N``).
        n_workers: how many workers the run has (N CPU workers split the cores).
        engine_kwargs: engine keywords except ``device``.
        factory: builds the engine; None: :func:`mambast_cli.pipeline.create_engine`.

    Returns:
        The engine.

    Raises:
        MambastError: the device or the weights cannot be used (DeviceError, WeightsError).
    """
    import torch

    if device == "cpu" and n_workers > 1:  # N CPU workers share the cores instead of each using them all
        torch.set_num_threads(max(1, usable_cpus() // n_workers))
    if device.startswith("cuda"):
        try:
            torch.cuda.set_device(torch.device(device))  # pinned buffers etc. land on this GPU, not on GPU 0
        except (RuntimeError, AssertionError) as e:
            raise DeviceError(f"cannot use {device}: {e}") from e
    create = factory
    if create is None:
        from mambast_cli.pipeline import create_engine as create
    return create(device=device, **engine_kwargs)


class WorkerLink:
    """A worker's end of its pipe to the parent: thread-safe send, stop-aware receive. A lost parent stops the worker."""

    def __init__(self, conn: Connection, stop: StopFlag) -> None:
        """Args:
            conn: the worker's end of the pipe.
            stop: set (locally) when the parent is gone.
        """
        self.conn, self.stop = conn, stop
        self._lock = threading.Lock()  # events come from the pipeline's threads too

    def send(self, msg: tuple[Any, ...]) -> None:
        """Send one message; if the parent is gone, stop quietly."""
        with self._lock:
            try:
                self.conn.send(msg)
            except (BrokenPipeError, EOFError, OSError):
                self.stop.set()

    def recv(self) -> tuple[Any, ...] | None:
        """The parent's next message, or None once the worker is stopped."""
        while not self.stop.is_set():
            try:
                if self.conn.poll(0.2):
                    msg: tuple[Any, ...] = self.conn.recv()
                    return msg
            except (EOFError, OSError):
                self.stop.set()
        return None


def worker_context(start_method: str) -> Any:
    """The multiprocessing context for worker processes (torch's, so tensors travel through shared memory)."""
    try:
        import torch.multiprocessing as tmp

        return tmp.get_context(start_method)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return mp.get_context(start_method)


def spawn_worker(ctx: Any, target: Callable[..., None], name: str,
                 make_args: Callable[[Connection], tuple[Any, ...]]) -> tuple[Any, Connection]:
    """Start one daemon worker process with a duplex pipe.

    Args:
        ctx: from :func:`worker_context`.
        target: the worker's main function.
        name: the process name.
        make_args: given the child's end of the pipe, the target's arguments.

    Returns:
        ``(process, the parent's end of the pipe)``.
    """
    parent_conn, child_conn = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=target, name=name, daemon=True, args=make_args(child_conn))
    proc.start()
    child_conn.close()
    return proc, parent_conn


def send_to_worker(conn: Connection, msg: tuple[Any, ...]) -> None:
    """Send to a worker; a dead one is noticed through its process sentinel, not here."""
    try:
        conn.send(msg)
    except (BrokenPipeError, EOFError, OSError):
        pass


def pump_workers(workers: Sequence[Any], handle: Callable[[Any, tuple[Any, ...]], None],
                 gone: Callable[[Any], None], timeout: float) -> None:
    """Wait up to ``timeout`` for messages or exits of the live workers, and dispatch them.

    Args:
        workers: objects with ``conn``, ``proc`` and ``state`` (``"gone"`` once handled as ended).
        handle: called with (worker, message) for every message, in order.
        gone: called once for each worker whose process ended or whose pipe broke.
        timeout: seconds to wait.
    """
    live = [w for w in workers if w.state != "gone"]
    by_conn = {id(w.conn): w for w in live}
    by_sentinel = {w.proc.sentinel: w for w in live}
    ended: list[Any] = []
    for r in wait([w.conn for w in live] + list(by_sentinel), timeout=timeout):
        if isinstance(r, int):
            ended.append(by_sentinel[r])
            continue
        w = by_conn[id(r)]
        try:
            while w.conn.poll(0):
                handle(w, w.conn.recv())
        except (EOFError, OSError):
            if w not in ended:
                ended.append(w)
    for w in ended:
        if w.state != "gone":
            gone(w)


def _worker_main(rank: int, n_workers: int, device: str, conn: Connection, shared_stop: Any, plan: Plan,
                 opts: RunOptions, engine_kwargs: dict[str, Any], share: list[int],
                 factory: Callable[..., Any] | None) -> None:
    """One worker process: build the engine, encode its share of styles, then run the tasks it is handed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent coordinates Ctrl-C through the stop flag
    os.environ[WORKER_RANK_ENV] = str(rank)
    stop = StopFlag(shared_stop)
    link = WorkerLink(conn, stop)
    send, recv = link.send, link.recv

    def feed() -> Iterator[tuple[int, tuple[int, ...]]]:
        while not stop.is_set():
            send(("want",))
            msg = recv()
            if msg is None or msg[0] != "task":
                return
            yield from msg[2]

    try:
        try:
            engine = start_worker_engine(device, n_workers, engine_kwargs, factory)
        except MambastError as e:
            send(("fatal", error_tuple(e)))
            return
        failed: dict[int, tuple[str, str, str | None]] = {}
        for si in share:
            if stop.is_set():
                break
            try:
                encode_style_source(engine, plan.styles[si], opts)
            except MambastError as e:
                failed[si] = error_tuple(e)
        send(("ready", failed))
        msg = recv()
        if msg is None or msg[0] != "go":
            send(("done", {"interrupted": False}))
            return
        bad: set[int] = msg[1]
        wplan = dataclasses.replace(
            plan, notes=[], done=[() for _ in plan.contents],
            pending=[tuple(si for si in p if si not in bad) for p in plan.pending],
        )
        # several processes share the host: stack batches with numpy, not torch's thread pool (measured on an H100
        # host, 2 workers: 387 pictures/s with np.stack, 158 with torch.stack; BENCHMARKS.md session 4)
        wopts = dataclasses.replace(opts, stack_with_torch=False) if n_workers > 1 else opts
        report = run_plan(wplan, engine, wopts, on_event=lambda ev: send(("event", ev)),
                          stop=stop, jobs=feed())  # type: ignore[arg-type]
        send(("done", {"style_cache_hits": report.style_cache_hits, "style_encodes": report.style_encodes,
                       "batch_sizes": dict(report.batch_sizes),
                       "interrupted": report.interrupted and not shared_stop.is_set() and not stop.local.is_set()}))
    except OutputError as e:
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
    assigned: dict[int, set[tuple[int, int]]] = field(default_factory=dict)


class _Parent:
    def __init__(self, plan: Plan, devices: Sequence[str], engine_kwargs: dict[str, Any], opts: RunOptions,
                 on_event: EventCallback | None, stop: threading.Event | None, task_size: int,
                 factory: Callable[..., Any] | None, start_method: str) -> None:
        self.plan, self.devices, self.engine_kwargs, self.opts = plan, list(devices), engine_kwargs, opts
        self.on_event, self.ext_stop, self.task_size = on_event, stop, max(1, int(task_size))
        self.factory, self.start_method = factory, start_method
        self.report = Report(planned=plan.n_pending)
        self.outstanding: set[tuple[int, int]] = set(plan.jobs())
        self.outmap = {self.plan.output_str(ci, si): (ci, si) for ci, si in self.outstanding}
        self.tasks: deque[tuple[int, list[tuple[int, tuple[int, ...]]]]] = deque()
        self.workers: list[_Worker] = []
        self.fatal: MambastError | None = None
        self.start_errors: list[tuple[str, str, str | None]] = []
        self.failed_styles: dict[int, tuple[str, str, str | None]] = {}
        self.notes_seen: set[tuple[str | None, str | None, str | None]] = set()
        self.ctx: Any = None
        self.shared_stop: Any = None

    # -- events ---------------------------------------------------------------------------------------------
    def emit(self, ev: Event) -> None:
        self.report.count(ev)
        if self.on_event is not None:
            self.on_event(ev)

    def fail_item(self, key: tuple[int, int], error: str, message: str, hint: str | None) -> None:
        if key not in self.outstanding:
            return
        self.outstanding.discard(key)
        ci, si = key
        self.emit(Event("error", input=self.plan.contents[ci].display, style=self.plan.styles[si].display,
                        output=self.plan.output_str(ci, si), error=error, message=message, hint=hint))

    # -- workers --------------------------------------------------------------------------------------------
    def spawn(self) -> None:
        self.ctx = worker_context(self.start_method)
        self.shared_stop = self.ctx.Event()
        needed = sorted({si for p in self.plan.pending for si in p})
        n = len(self.devices)
        for rank, dev in enumerate(self.devices):
            proc, conn = spawn_worker(
                self.ctx, _worker_main, f"mambast-worker-{rank}",
                lambda child, rank=rank, dev=dev: (rank, n, dev, child, self.shared_stop, self.plan, self.opts,
                                                   self.engine_kwargs, needed[rank::n], self.factory))
            self.workers.append(_Worker(rank, dev, proc, conn))

    def send(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        send_to_worker(w.conn, msg)

    def stopping(self) -> bool:
        return self.fatal is not None or self.report.interrupted or self.shared_stop.is_set() or (
            self.ext_stop is not None and self.ext_stop.is_set())

    def handle(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "event":
            ev: Event = msg[1]
            key = self.outmap.get(ev.output or "") if ev.kind in ("ok", "error") and ev.style else None
            if key is None:
                if ev.kind == "note":  # every worker may say the same thing (a style it cannot read): say it once
                    if (ev.input, ev.style, ev.message) in self.notes_seen:
                        return
                    self.notes_seen.add((ev.input, ev.style, ev.message))
                self.emit(ev)
                return
            if key not in self.outstanding:
                return  # already reported (cannot happen; never count an item twice)
            self.outstanding.discard(key)
            for keys in w.assigned.values():
                keys.discard(key)
            self.emit(ev)
        elif kind == "want":
            w.assigned = {t: k for t, k in w.assigned.items() if k}
            if self.tasks and not self.stopping():
                tid, items = self.tasks.popleft()
                w.assigned[tid] = {(ci, si) for ci, styles in items for si in styles}
                self.send(w, ("task", tid, items))
            else:
                self.send(w, ("end",))
        elif kind == "ready":
            w.state = "ready"
            for si, err in msg[1].items():
                self.failed_styles.setdefault(si, err)
        elif kind == "done":
            w.finished = True
            info = msg[1]
            self.report.style_cache_hits += int(info.get("style_cache_hits", 0))
            self.report.style_encodes += int(info.get("style_encodes", 0))
            for b, c in info.get("batch_sizes", {}).items():
                self.report.batch_sizes[b] = self.report.batch_sizes.get(b, 0) + c
            if info.get("interrupted"):
                self.report.interrupted = True
                self.shared_stop.set()
        elif kind == "fatal":
            err = msg[1]
            if w.state == "loading":
                self.start_errors.append(err)
                w.finished = True
            else:
                if self.fatal is None:
                    self.fatal = rebuild_error(err)
                self.shared_stop.set()
        elif kind == "crash":
            w.crash = msg[1]

    def gone(self, w: _Worker) -> None:
        """A worker's process ended: read what it still sent, then fail what it held."""
        try:
            while w.conn.poll(0):
                self.handle(w, w.conn.recv())
        except (EOFError, OSError):
            pass
        w.proc.join(timeout=5)
        was_loading = w.state == "loading"
        w.state = "gone"
        if not w.finished and w.proc.exitcode is not None:  # it died: maybe mid-write, so remove what it left
            for keys in w.assigned.values():
                for ci, si in keys:
                    final = self.plan.output_for(ci, si)
                    if final is not None:
                        discard_parts(final, w.proc.pid)
        if w.finished or (self.stopping() and not was_loading):
            w.assigned.clear()  # a clean exit, or a stop (Ctrl-C, fatal error): unfinished items are dropped, not failed
            return
        code = w.proc.exitcode
        why = w.crash or (f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}")
        if was_loading:
            self.start_errors.append(("DeviceError", f"worker on {w.device} stopped while starting ({why})", None))
            return
        self.emit(Event("note", input=w.device, message=f"worker {w.rank} on {w.device} stopped ({why}); "
                                                         "the other workers go on"))
        for keys in w.assigned.values():
            for key in sorted(keys):
                self.fail_item(key, "DeviceError", f"worker {w.rank} on {w.device} stopped ({why}) while this item "
                               "was in flight", "run the same command again to retry it (finished outputs are skipped)")
        w.assigned.clear()

    def pump(self, timeout: float) -> None:
        """Wait for messages or exits, and handle them."""
        pump_workers(self.workers, self.handle, self.gone, timeout)
        if self.ext_stop is not None and self.ext_stop.is_set():
            self.report.interrupted = True
            self.shared_stop.set()

    def run(self) -> Report:
        t0 = time.perf_counter()
        for ev in self.plan.start_events():
            self.emit(ev)
        if not self.plan.n_pending:
            self.report.elapsed_s = time.perf_counter() - t0
            return self.report
        items = [(ci, tuple(st)) for ci, st in enumerate(self.plan.pending) if st]
        for k in range(0, len(items), self.task_size):
            self.tasks.append((k // self.task_size, items[k:k + self.task_size]))
        deadline: float | None = None
        try:
            self.spawn()
            # phase 1: engines load and styles get encoded (each style by one worker, into the disk cache)
            while any(w.state == "loading" for w in self.workers) and not self.stopping():
                self.pump(0.2)
            ready = [w for w in self.workers if w.state == "ready"]
            for err in self.start_errors:
                if ready:
                    self.emit(Event("note", input=None, message=f"a worker could not start: {err[1]}; "
                                                                "continuing with the others"))
            if not ready and not self.stopping():
                raise rebuild_error(self.start_errors[0]) if self.start_errors else DeviceError("no worker started")
            self._fail_styles()
            for w in ready:
                w.state = "running"
                self.send(w, ("go", set(self.failed_styles)))
            # phase 2: hand out tasks until every worker has finished or died
            while any(w.state != "gone" for w in self.workers):
                try:
                    if self.stopping() and deadline is None:
                        self.shared_stop.set()
                        deadline = time.monotonic() + _STOP_GRACE_S
                    if deadline is not None and time.monotonic() > deadline:
                        break
                    self.pump(0.2)
                except KeyboardInterrupt:
                    if self.report.interrupted:  # second Ctrl-C: stop waiting for writes in flight
                        break
                    self.report.interrupted = True
                    self.shared_stop.set()
        except KeyboardInterrupt:
            self.report.interrupted = True
        finally:
            if self.shared_stop is not None:
                self.shared_stop.set()
            for w in self.workers:
                w.proc.join(timeout=10 if deadline is None else 2)
                if w.proc.is_alive():
                    w.proc.terminate()
                    w.proc.join(timeout=5)
                w.conn.close()
            self.report.elapsed_s = time.perf_counter() - t0
        if self.fatal is not None:
            raise self.fatal
        if not self.report.interrupted and self.outstanding:
            # every worker is gone with work left: nothing else can run it
            for key in sorted(self.outstanding):
                self.fail_item(key, "DeviceError", "not processed: every worker stopped (see the errors above)",
                               "run the same command again to retry it")
        return self.report

    def _fail_styles(self) -> None:
        for si, err in sorted(self.failed_styles.items()):
            src = self.plan.styles[si]
            self.emit(Event("note", style=src.display, message=f"style unusable, its items fail: {err[1]}"))
            for ci, styles in enumerate(self.plan.pending):
                if si in styles:
                    self.fail_item((ci, si), err[0], f"style failed: {err[1]}", err[2])
        if self.failed_styles:
            bad = set(self.failed_styles)
            kept: deque[tuple[int, list[tuple[int, tuple[int, ...]]]]] = deque()
            for tid, items in self.tasks:
                items = [(ci, tuple(s for s in st if s not in bad)) for ci, st in items]
                items = [(ci, st) for ci, st in items if st]
                if items:
                    kept.append((tid, items))
            self.tasks = kept


def run_plan_multi(
    plan: Plan,
    devices: Sequence[str],
    engine_kwargs: dict[str, Any] | None = None,
    opts: RunOptions | None = None,
    *,
    on_event: EventCallback | None = None,
    stop: threading.Event | None = None,
    task_size: int = 8,
    factory: Callable[..., Any] | None = None,
    start_method: str = "spawn",
) -> Report:
    """Execute a plan on several devices of this host, one worker process each (see the module docstring).

    Args:
        plan: from :func:`mambast_cli.pipeline.plan_jobs`; must write to a folder (not stdout).
        devices: one device string per worker (:func:`parse_devices`), e.g. ``["cuda:0", "cuda:1"]``.
        engine_kwargs: engine keywords except ``device`` (weights, precision, seed, cache_dir, disk_cache).
        opts: processing options (as for ``run_plan``; ``decode_workers``/``write_workers`` are per worker).
        on_event: called in this process, one event at a time: notes, skips, then one ``ok``/``error`` per item.
        stop: set it from another thread to stop the run early (treated like Ctrl-C).
        task_size: contents per task handed to a worker (smaller: finer balancing; larger: fewer messages).
        factory: builds each worker's engine (a picklable callable taking the engine keywords); default
            :func:`mambast_cli.pipeline.create_engine` in the worker (the fake engine when ``MAMBAST_FAKE_ENGINE``
            is set in the environment, which workers inherit).
        start_method: multiprocessing start method (``spawn``; ``forkserver`` also works; never ``fork`` with CUDA).

    Returns:
        The Report: the same counts and events as a one-device run (style counters summed over workers).

    Raises:
        UsageError: no device, or the plan writes to stdout.
        WeightsError / DeviceError: no worker could start (the first worker's error).
        OutputError: a worker could not write its output (the run stops; finished outputs stay).
    """
    if not devices:
        raise UsageError("no device given for a multi-device run")
    if plan.outdir is None:
        raise UsageError("--devices needs an output folder (not -o -)")
    kwargs = dict(engine_kwargs or {})
    kwargs.pop("device", None)
    return _Parent(plan, devices, kwargs, opts or RunOptions(), on_event, stop, task_size, factory, start_method).run()
