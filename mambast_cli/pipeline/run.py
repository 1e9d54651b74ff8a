"""Streaming execution of a Plan: decode → bucket → batch → engine → encode + write → events → Report.

Owns threads, queues, batching, OOM back-off and interruption. Must not print: everything is reported through
the ``on_event`` callback (called under a lock, one event at a time, possibly from a writer thread) and the
returned :class:`Report`.

Data flow and invariants:
- Decoding runs in a thread pool over a bounded, ordered window (back-pressure): at most ``queue_size`` (or two
  full batches, if larger) pictures are decoded ahead, at most twice that wait in buckets, and a bounded number of
  results wait for the writers, so memory stays constant however many files are planned. Results are consumed in
  plan order, so batches (and outputs) are the same on every run: with the engine's seed fixed, a run is
  deterministic.
- Pictures are grouped by processed size (a bucket) because a batch needs one size. A bucket is sent when it
  holds a full batch; when too many pictures wait across buckets, the fullest bucket is sent early.
- Styles are encoded on the calling thread before any content; then every content batch goes to one engine thread
  (`mambast-engine`), at most two batches queued. The engine is never called from two threads at once, and batches
  run in plan order. Each style is decoded once and encoded once per run; a style that fails fails only its own
  items. Contents that need several styles are batched together and each batch's content side is computed once
  for all of them (`Engine.stylize_many`: 20 × 40 at 512² in 2.05 s instead of 2.9 on an H100).
- On a CUDA engine (BENCHMARKS.md, session 4, says why each step is there): the calling thread stacks each batch
  into one of two pinned buffers used in turn (`io.transfer.PinnedPair`; a buffer is refilled only after the GPU has copied it);
  the engine thread only queues work: the copy in, the model, the uint8 conversion and the copy back into pinned
  memory, and never waits for the GPU; one dispatcher thread waits for each batch's copy back (a CUDA event) and
  hands its pictures to the writers. Python's GIL is the bottleneck of this design, so the threads that feed the
  GPU do as few GIL hand-backs per batch as possible.
- Back-pressure on the output side is by bytes (``_BytesBudget``, 512 MiB of finished pictures waiting for the
  writers, reserved once per batch), so memory stays bounded for huge pictures too.
- The Report's ``stages`` say where the time went (see :class:`Report`).
- Out of memory: ``torch.OutOfMemoryError`` escaping ``stylize`` splits the batch in two and retries both halves,
  down to one picture; the smaller batch size is kept for that bucket. A DeviceError from ``stylize`` means the
  engine already backed off to one picture (and tiles) and still ran out: each item of that call fails, the run
  goes on. A single picture that still raises OOM is an error for that item.
- Outputs are written atomically (see mambast_cli.io.files). An OutputError stops the run and is re-raised.
- KeyboardInterrupt: stop feeding, let writes in flight finish (each is atomic), drop the rest, return a Report
  with ``interrupted=True``.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from mambast_cli.errors import DeviceError, MambastError, OutputError
from mambast_cli.io import (
    DEFAULT_MAX_PIXELS,
    clean_stale_parts,
    decode_image,
    encode_image,
    image_to_array,
    image_to_tensor,
    load_image,
    read_input_bytes,
    resize_image,
    target_size,
    tensor_to_image,
    frames_to_device,
    upload_frames,
    write_atomic,
)
from mambast_cli.io import gpu_jpeg
from mambast_cli.io.gpu_jpeg import decode_resize as gpu_decode_resize
from mambast_cli.io.transfer import PinnedPair, download_async, record_event, wait_event
from mambast_cli.pipeline.plan import Event, Plan, Source

EventCallback = Callable[[Event], None]

# Decoded pictures are read-only numpy views of Pillow's buffers; `torch.from_numpy` warns about that once, though
# they are only ever read (stacked into the pinned staging buffer).
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)


_GPU_JPEG_MAX_FAILURES = 3     # whole batches refused in a row before GPU decoding is given up for the run


@dataclass
class RunOptions:
    """How to process a plan (the stylize command's options, minus planning and engine construction).

    Attributes:
        size: shorter side to process at (0 keeps the original size).
        max_side: cap on the longer side (0: none).
        style_size: passed to the engine (None: the engine's default).
        alpha: style strength in [0, 1].
        preserve_color: keep the content's colours.
        quality: encoder quality (the format is the plan's) (None: the format's default).
        batch_size: pictures per engine call (None: ``engine.max_batch(h, w)``).
        max_pixels: decompression-bomb limit.
        decode_workers: decoder threads (None: from the CPU count, 2–8).
        write_workers: encoder/writer threads (None: from the CPU count, 2–8).
        queue_size: decoded pictures allowed to wait (None: enough to fill batches).
        fsync: fsync each output before its rename.
        stack_with_torch: on a CUDA engine, stack a batch into pinned memory with ``torch.stack`` (one GIL hand-back,
            torch's CPU threads) rather than ``np.stack`` (one hand-back per picture): faster in one process (338–361
            vs 285 pictures/s at 512² on an H100 host), much slower when several worker processes share the host
            (each with a full thread pool), so the multi-worker path turns it off.
    """

    size: int = 512
    max_side: int = 2048
    style_size: int | None = None
    alpha: float = 1.0
    preserve_color: bool = False
    quality: int | None = None
    batch_size: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_workers: int | None = None
    write_workers: int | None = None
    queue_size: int | None = None
    fsync: bool = True
    stack_with_torch: bool = True


@dataclass
class Report:
    """What a run did.

    Attributes:
        planned: jobs that were to be computed.
        ok: outputs written.
        failed: items that failed (each has an entry in ``errors``).
        skipped: items skipped (output existed, or input inside the output folder).
        errors: the error events.
        elapsed_s: wall time of the run.
        interrupted: the run was stopped by Ctrl-C.
        style_cache_hits: from the engine's stats.
        style_encodes: from the engine's stats.
        batch_sizes: how many engine calls had each batch size.
        gpu_decoded, gpu_decode_fallbacks: JPEGs decoded on the GPU (`io.gpu_jpeg`), and JPEGs of batches
            that nvJPEG refused, decoded on the CPU instead.
        stages: seconds per stage: ``decode_wait`` (the calling thread waiting for a decode), ``engine_wait``
            (waiting for a free engine slot: the engine is the bottleneck), ``engine_busy`` (upload, model,
            download), ``write_wait`` (the engine thread waiting for the writers), ``decode_busy`` and
            ``write_busy`` (summed over the worker threads); on a CUDA engine also ``stack`` (the calling thread
            stacking a batch into pinned memory), ``engine_upload`` and ``engine_launch`` (the engine thread
            queueing the copy, the model and the copy back; it does not wait for the GPU) and
            ``dispatch_gpu_wait`` (the dispatcher waiting for the GPU before handing pictures to the writers).
    """

    planned: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[Event] = field(default_factory=list)
    elapsed_s: float = 0.0
    interrupted: bool = False
    style_cache_hits: int = 0
    style_encodes: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    gpu_decoded: int = 0
    gpu_decode_fallbacks: int = 0

    def add_time(self, stage: str, seconds: float) -> None:
        """Add to a stage's seconds (callers hold the runner's lock or are the only writer of that stage)."""
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    def count(self, ev: Event) -> None:
        """Count one item event: ``ok``, ``error`` (kept in ``errors``) or ``skipped``; other kinds are not items."""
        if ev.kind == "ok":
            self.ok += 1
        elif ev.kind == "error":
            self.failed += 1
            self.errors.append(ev)
        elif ev.kind == "skipped":
            self.skipped += 1

    @property
    def images_per_s(self) -> float:
        """Outputs written per second of wall time."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def success(self) -> bool:
        """No item failed and the run was not interrupted."""
        return self.failed == 0 and not self.interrupted

    def to_dict(self) -> dict[str, object]:
        """The summary as a JSON-ready dict (``event: summary``)."""
        return {
            "event": "summary",
            "planned": self.planned,
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
            "elapsed_s": round(self.elapsed_s, 3),
            "images_per_s": round(self.images_per_s, 3),
            "style_cache_hits": self.style_cache_hits,
            "style_encodes": self.style_encodes,
            "interrupted": self.interrupted,
            "stages_s": {k: round(v, 3) for k, v in sorted(self.stages.items())},
            **({"gpu_decoded": self.gpu_decoded, "gpu_decode_fallbacks": self.gpu_decode_fallbacks}
               if self.gpu_decoded or self.gpu_decode_fallbacks else {}),
        }


class _BytesBudget:
    """Bytes of finished pictures handed to the writers and not yet written: `acquire` blocks above `limit`
    (one picture is always let through, however large)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = int(limit), 0
        self.cv = threading.Condition()

    def acquire(self, n: int, give_up: Callable[[], bool]) -> bool:
        """Reserve n bytes; False if `give_up()` turned true while waiting."""
        with self.cv:
            while self.used > 0 and self.used + n > self.limit:
                if give_up():
                    return False
                self.cv.wait(0.1)
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self.cv:
            self.used -= n
            self.cv.notify_all()


#: finished pictures allowed to wait for the writers (two 64-picture batches at 1024² fit).
WRITE_BUDGET_BYTES = 512 * 1024 * 1024


@dataclass
class _Item:
    ci: int
    styles: tuple[int, ...]
    # (H, W, 3) uint8 numpy array for a CUDA engine (converted there), a _Jpeg to decode on the GPU, or (CPU engine)
    # a (3, H, W) float tensor
    pixels: Any
    t0: float


def _is_cuda(device: Any) -> bool:
    import torch

    return isinstance(device, torch.device) and device.type == "cuda"


@dataclass
class _Jpeg:
    """A JPEG left undecoded for the GPU (`io.gpu_jpeg`): its bytes, the (H, W) it is processed at and its EXIF
    orientation."""

    data: bytes
    hw: tuple[int, int]
    orientation: int = 1


def _size(item: _Item) -> tuple[int, int]:
    p = item.pixels
    if isinstance(p, _Jpeg):
        return p.hw
    return (int(p.shape[0]), int(p.shape[1])) if isinstance(p, np.ndarray) else (int(p.shape[1]), int(p.shape[2]))


def _bucket(item: _Item) -> tuple[int, int, bool]:
    """Batches hold one size, and either only GPU-decoded JPEGs or only pictures decoded on the CPU."""
    h, w = _size(item)
    return h, w, isinstance(item.pixels, _Jpeg)


def _to_uint8_hwc(out: Any, torch: Any) -> Any:
    """(B, 3, H, W) float in [0, 1] → (B, H, W, 3) uint8 on the same device, rounded as `tensor_to_image` does
    (clamp, ×255, round)."""
    return out.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _download(out: Any, torch: Any) -> Any:
    """(B, 3, H, W) float in [0, 1] on any device → (B, H, W, 3) uint8 numpy, converted on the device, so one uint8
    copy comes back instead of float pictures (the upload side is `upload_frames`)."""
    return _to_uint8_hwc(out, torch).cpu().numpy()


def _download_async(out: Any, torch: Any) -> tuple[Any, Any]:
    """`_download` without waiting: the same uint8 (B, H, W, 3) values, copied into fresh pinned memory on the
    current stream; returns (host tensor, CUDA event recorded after the copy)."""
    return download_async(_to_uint8_hwc(out, torch))


_wait_event = wait_event    # a module-level name, so tests can break it


def _pinned_empty(nbytes: int) -> Any:
    """A flat pinned uint8 host tensor, or None where pinned memory is unavailable (no CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset, cpusets), not all the machine has."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:       # not on Linux
        return os.cpu_count() or 1


_CPUS = max(2, usable_cpus())


def _cpu_workers(n: int | None) -> int:
    return n if n and n > 0 else max(2, min(8, _CPUS))


def _out_of_memory_types() -> tuple[type[BaseException], ...]:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
    return (oom,)


def engine_counters(engine: Any) -> tuple[int, int]:
    """Style cache hits (memory + disk) and style encodes from an engine's ``stats``.

    Args:
        engine: any engine (or None).

    Returns:
        (style_cache_hits, style_encodes).
    """
    stats = getattr(engine, "stats", None) or {}
    hits = sum(int(v) for k, v in stats.items() if k.startswith("style_cache_hits"))
    return hits, int(stats.get("style_encodes", 0))


def _free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def source_bytes(src: Source) -> bytes:
    """The encoded bytes of a source (read from disk or held in memory).

    Args:
        src: the source.

    Returns:
        The bytes.
    """
    if src.data is not None:
        return src.data
    assert src.path is not None
    return read_input_bytes(src.path)


def encode_style_source(engine: Any, src: Source, opts: RunOptions) -> Any:
    """Decode a style source and encode it with the engine, exactly as a run does (same cache key and resizing).

    Args:
        engine: the engine.
        src: the style source.
        opts: the run's options (``max_pixels``, ``max_side``, ``style_size`` are used).

    Returns:
        The engine's style handle.

    Raises:
        MambastError: the style cannot be read or encoded.
    """
    data = source_bytes(src)
    img = decode_image(data, name=src.display, max_pixels=opts.max_pixels)
    if opts.max_side:
        img = resize_image(img, target_size(*img.size, max_side=opts.max_side))
    key = hashlib.sha256(data).hexdigest()
    return engine.encode_style(image_to_tensor(img), key=key, style_size=opts.style_size)


class _Runner:
    def __init__(self, plan: Plan, engine: Any, opts: RunOptions, on_event: EventCallback | None,
                 stdout_sink: Callable[[bytes], None] | None, stop: threading.Event | None,
                 jobs: Iterable[tuple[int, tuple[int, ...]]] | None = None,
                 style_handles: dict[int, Any] | None = None) -> None:
        self.plan, self.engine, self.opts = plan, engine, opts
        self.jobs = jobs
        self.on_event = on_event
        self.stdout_sink = stdout_sink
        self.stop = stop or threading.Event()
        self.report = Report(planned=plan.n_pending)
        self.lock = threading.Lock()
        self.fatal: BaseException | None = None
        self.handles: dict[int, Any] = dict(style_handles or {})
        self.failed_styles: dict[int, Event] = {}
        self.caps: dict[tuple[int, int], int] = {}
        self.cleaned_dirs: set[str] = set()
        self.write_budget = _BytesBudget(WRITE_BUDGET_BYTES)
        # pinned upload staging (CUDA engines), see `_submit_chunk`; `_pinned_empty` is looked up at each call, so
        # tests can stand plain memory in for pinned memory
        self._pins = PinnedPair(allocate=lambda n: _pinned_empty(n))
        self.engine_slots = threading.BoundedSemaphore(2)   # batches queued or running on the engine thread
        self.engine_pool: ThreadPoolExecutor | None = None  # created in run()
        self.oom_types = _out_of_memory_types()
        # On a CUDA engine pictures travel as uint8 and are converted on the GPU (`upload_frames`, `_download`); on the
        # CPU the decode and write threads convert them, in parallel, as float tensors. Same bytes either way.
        self.gpu_io = _is_cuda(getattr(engine, "device", None))
        # With torchvision's nvJPEG op present (MAMBAST_GPU_DECODE=0: never), JPEGs travel as bytes and are decoded on
        # the GPU.
        self.gpu_jpeg = self.gpu_io and gpu_jpeg.enabled() and gpu_jpeg.available()
        self.gpu_jpeg_failures = 0      # whole batches nvJPEG refused in a row (see `_decode_on_gpu`)

    # -- events ---------------------------------------------------------------------------------------------
    def emit(self, ev: Event) -> None:
        with self.lock:
            self.report.count(ev)
            if self.on_event is not None:
                self.on_event(ev)

    def item_error(self, ci: int, si: int | None, e: MambastError | str, kind: str = "InputError") -> None:
        msg = str(e)
        self.emit(Event(
            "error",
            input=self.plan.contents[ci].display,
            style=self.plan.styles[si].display if si is not None else None,
            output=self.plan.output_str(ci, si) if si is not None else None,
            error=type(e).__name__ if isinstance(e, MambastError) else kind,
            message=msg,
            hint=e.hint if isinstance(e, MambastError) else None,
        ))

    # -- styles ---------------------------------------------------------------------------------------------
    def encode_styles(self) -> None:
        needed = sorted({si for p in self.plan.pending for si in p})
        disk = getattr(self.engine, "disk", None)
        if disk is not None and needed and not disk.usable():
            self.emit(Event("note", message=disk.problem))
        for si in needed:
            if self.stop.is_set():
                return
            if si in self.handles:  # pre-encoded by the caller (several workers share one encoding)
                continue
            src = self.plan.styles[si]
            try:
                self.handles[si] = encode_style_source(self.engine, src, self.opts)
            except MambastError as e:
                self.failed_styles[si] = Event("error", style=src.display, error=type(e).__name__,
                                               message=f"style failed: {e}", hint=e.hint)
                self.emit(Event("note", style=src.display, message=f"style unusable, its items fail: {e}"))

    # -- decode stream ----------------------------------------------------------------------------------------
    def _feed(self) -> Iterator[tuple[int, tuple[int, ...]]]:
        feed = self.jobs if self.jobs is not None else enumerate(self.plan.pending)
        for ci, styles in feed:
            if not styles:
                continue
            ok_styles = []
            for si in styles:
                if si in self.failed_styles:
                    bad = self.failed_styles[si]
                    self.emit(Event("error", input=self.plan.contents[ci].display, style=bad.style,
                                    output=self.plan.output_str(ci, si), error=bad.error, message=bad.message, hint=bad.hint))
                else:
                    ok_styles.append(si)
            if ok_styles:
                yield ci, tuple(ok_styles)

    def _decode(self, ci: int, styles: tuple[int, ...]) -> _Item | MambastError:
        t0 = time.perf_counter()
        src = self.plan.contents[ci]
        try:
            data = source_bytes(src)
            if self.gpu_jpeg and gpu_jpeg.is_jpeg(data):      # header only here; the engine thread decodes
                h, w, orientation = gpu_jpeg.jpeg_header(data, name=src.display, size=self.opts.size,
                                                         max_side=self.opts.max_side, max_pixels=self.opts.max_pixels)
                return _Item(ci, styles, _Jpeg(data, (h, w), orientation), t0)
            img = self._load(data, src)
            if self.gpu_io:
                return _Item(ci, styles, image_to_array(img), t0)     # decode_image returns RGB
            return _Item(ci, styles, image_to_tensor(img), t0)
        except MambastError as e:
            return e
        finally:
            self._timed("decode_busy", t0)

    def _load(self, data: bytes, src: Source) -> Any:
        """Decode and resize one picture on the CPU at the run's processing size (raises InputError)."""
        return load_image(data, name=src.display, size=self.opts.size, max_side=self.opts.max_side,
                          max_pixels=self.opts.max_pixels)

    def _fail_run(self, e: BaseException) -> None:
        """Stop the run; the first such error is re-raised by `run` in the calling thread."""
        with self.lock:
            if self.fatal is None:
                self.fatal = e
        self.stop.set()

    def _timed(self, stage: str, t0: float) -> None:
        dt = time.perf_counter() - t0
        with self.lock:
            self.report.add_time(stage, dt)

    def decoded(self, pool: ThreadPoolExecutor) -> Iterator[_Item]:
        window: deque[tuple[int, tuple[int, ...], Future[_Item | MambastError]]] = deque()

        def take() -> Iterator[_Item]:
            ci, styles, fut = window.popleft()
            t0 = time.perf_counter()
            res = fut.result()
            self._timed("decode_wait", t0)
            if isinstance(res, MambastError):
                for si in styles:
                    self.item_error(ci, si, res)
            else:
                yield res

        for ci, styles in self._feed():
            if self.stop.is_set():
                break
            window.append((ci, styles, pool.submit(self._decode, ci, styles)))
            while len(window) >= self._queue_size():
                yield from take()
        while window and not self.stop.is_set():
            yield from take()

    def _queue_size(self) -> int:
        """Decoded pictures allowed ahead of the engine: two full batches (one being gathered while the decoders
        work on the next), so the device never waits on decoding."""
        base = self.opts.queue_size or max(8, 2 * _cpu_workers(self.opts.decode_workers))
        return max(base, 2 * max(self.caps.values(), default=1))

    # -- batching ---------------------------------------------------------------------------------------------
    def batch_for(self, size: tuple[int, int]) -> int:
        if size not in self.caps:
            if self.opts.batch_size:
                b = self.opts.batch_size
            else:
                try:
                    b = int(self.engine.max_batch(size[0], size[1]))
                except (AttributeError, MambastError):
                    b = 1
            self.caps[size] = max(1, b)
        return self.caps[size]

    def process(self, items: list[_Item]) -> None:
        """One bucket of decoded items (one processed size) → engine batches. Items that need the same several
        styles go together, so that each batch's content side is computed once for all of them
        (`Engine.stylize_many`); items with one style are batched per style."""
        import torch

        groups: dict[tuple[int, ...], list[_Item]] = {}
        for it in items:
            groups.setdefault(it.styles, []).append(it)
        for sis, group in groups.items():
            if self.stop.is_set():
                return
            size = _size(group[0])
            cap = self.batch_for(size)  # type: ignore[arg-type]
            for n, k in enumerate(range(0, len(group), cap)):
                # styles in alternate directions batch after batch: when their per-grid layouts outgrow the engine's
                # LRU, the ones used last are the first needed again (a cyclic order would miss on every style)
                order = sis if n % 2 == 0 else sis[::-1]
                self._submit_chunk(group[k : k + cap], order, size, torch)  # type: ignore[arg-type]

    def _submit_chunk(self, chunk: list[_Item], sis: tuple[int, ...], size: tuple[int, int], torch: Any) -> None:
        """Queue one batch for the engine thread (at most two queued or running: back-pressure)."""
        t0 = time.perf_counter()
        while not self.engine_slots.acquire(timeout=0.1):
            if self.stop.is_set() or self.fatal is not None:
                return
        self._timed("engine_wait", t0)
        staged = None
        if self.gpu_io and not isinstance(chunk[0].pixels, _Jpeg):
            # Stack the batch into pinned memory here, not on the engine thread: under GIL contention every
            # GIL hand-back of the copy costs the engine thread time (BENCHMARKS.md, session 4).
            # Two buffers in turn: this thread refills one only after taking an engine slot, so the batch that used it
            # two turns ago has been handed to the GPU; `take` waits for that batch's copy (the event `_run_chunk`
            # recorded for the slot), since the engine thread does not wait for the GPU. None: no pinned memory.
            t1 = time.perf_counter()
            staged = self._pins.take((len(chunk), *chunk[0].pixels.shape))
            if staged is not None:
                # torch.stack is one C++ call (one GIL hand-back, copies on the intra-op threads); np.stack hands the
                # GIL back once per picture and waited for it 64 times a batch (3.3 ms per 512² picture measured)
                if self.opts.stack_with_torch:
                    torch.stack([torch.from_numpy(it.pixels) for it in chunk], out=staged[0])
                else:
                    np.stack([it.pixels for it in chunk], out=staged[0].numpy())
            self._timed("stack", t1)
        assert self.engine_pool is not None
        fut = self.engine_pool.submit(self._engine_job, chunk, sis, size, torch, staged)
        fut.add_done_callback(lambda f: self.engine_slots.release())

    def _engine_thread_init(self) -> None:
        """The current CUDA device is per thread (Triton launches on it): make it the engine's."""
        dev = getattr(self.engine, "device", None)
        if _is_cuda(dev) and getattr(dev, "index", None) is not None:
            import torch

            torch.cuda.set_device(dev)

    def _engine_job(self, chunk: list[_Item], sis: tuple[int, ...], size: tuple[int, int], torch: Any,
                    staged: Any = None) -> None:
        """One batch on the engine thread. Item errors are events; anything else stops the run and is re-raised
        by `run` (a KeyboardInterrupt raised inside the engine counts as an interruption)."""
        t0 = time.perf_counter()
        try:
            self._run_chunk(chunk, sis, size, torch, staged)
        except KeyboardInterrupt:
            self.report.interrupted = True
            self.stop.set()
        except BaseException as e:
            self._fail_run(e)
        finally:
            self._timed("engine_busy", t0)

    def _run_chunk(self, chunk: list[_Item], sis: tuple[int, ...], size: tuple[int, int], torch: Any,
                   staged: Any = None) -> None:
        """One batch on the engine thread, for each of the styles `sis` (several: the content side once,
        `Engine.stylize_many`); `staged` is the batch already stacked into pinned memory (CUDA)."""
        if self.stop.is_set():
            return
        x = y = results = None
        done = 0                      # styles whose results were handed to the writers
        try:
            if self.gpu_io:
                t0 = time.perf_counter()
                if isinstance(chunk[0].pixels, _Jpeg):
                    chunk, x = self._decode_on_gpu(chunk, sis, size)
                    if not chunk:
                        return
                elif staged is not None:
                    x = frames_to_device(staged[0], self.engine.device)
                    self._pins.uploaded(staged[1], record_event(x))   # the buffer may be refilled after this
                else:
                    x = upload_frames([it.pixels for it in chunk], self.engine.device)
                with self.lock:
                    self.report.add_time("engine_upload", time.perf_counter() - t0)
            else:
                x = torch.stack([it.pixels for it in chunk])
            results = self._stylized(x, sis)
            for si in sis:
                t1 = time.perf_counter()
                y = next(results)        # launches the batch's work for this style (CUDA: does not wait for it)
                ready = None
                if not self.gpu_io:
                    out = y
                elif y.is_cuda:      # queue the uint8 copy back; the dispatcher waits for it, this thread goes on
                    out, ready = _download_async(y, torch)
                else:
                    out = _download(y, torch)
                y = None
                with self.lock:
                    self.report.add_time("engine_launch", time.perf_counter() - t1)
                    self.report.batch_sizes[len(chunk)] = self.report.batch_sizes.get(len(chunk), 0) + 1
                self.submit_writes(chunk, out, si, ready)
                done += 1
        except self.oom_types:
            if results is not None:
                results.close()        # the shared content side it holds goes now, before the retry
            del x, y, results
            rest = sis[done:]
            if staged is not None:
                torch.cuda.synchronize()       # the staged copy must be done before the halves reuse it
            _free_device_memory()
            if len(chunk) == 1:
                h, w = size
                err = DeviceError(f"out of memory even for one picture at {w}×{h}",
                                  hint="lower --size or --max-side, or use --device cpu")
                for si in rest:
                    self.item_error(chunk[0].ci, si, err)
                return
            half = len(chunk) // 2
            self.caps[size] = max(1, min(self.caps.get(size, half), half))
            self._run_chunk(chunk[:half], rest, size, torch, None if staged is None else (staged[0][:half], staged[1]))
            self._run_chunk(chunk[half:], rest, size, torch, None if staged is None else (staged[0][half:], staged[1]))
        except MambastError as e:
            for si in sis[done:]:
                for it in chunk:
                    self.item_error(it.ci, si, e)

    def _stylized(self, x: Any, sis: tuple[int, ...]) -> Iterator[Any]:
        """The engine's results for the batch x, one per style of `sis` (on the device for a CUDA engine)."""
        kw = dict(alpha=self.opts.alpha, preserve_color=self.opts.preserve_color, on_device=self.gpu_io)
        many = getattr(self.engine, "stylize_many", None)     # stand-in engines may not have it
        if len(sis) > 1 and many is not None:
            yield from many(x, [self.handles[si] for si in sis], **kw)
        else:
            for si in sis:
                yield self.engine.stylize(x, self.handles[si], **kw)

    def _decode_on_gpu(self, chunk: list[_Item], sis: tuple[int, ...], size: tuple[int, int]) -> tuple[list[_Item], Any]:
        """A batch of JPEG bytes → (B, 3, H, W) on the device (`io.gpu_jpeg`). If nvJPEG refuses the batch, its
        pictures are decoded on the CPU instead (those that fail there are item errors, dropped from the batch).
        Returns the batch that remains and its pixels."""
        if self.gpu_jpeg:        # off once nvJPEG refused _GPU_JPEG_MAX_FAILURES batches in a row
            try:
                x = gpu_decode_resize([it.pixels.data for it in chunk], size, self.engine.device,
                                      [it.pixels.orientation for it in chunk])
                with self.lock:
                    self.report.gpu_decoded += len(chunk)
                self.gpu_jpeg_failures = 0
                return chunk, x
            except self.oom_types:
                raise
            except Exception as e:  # noqa: BLE001  a file nvJPEG cannot read, or a decoder that cannot run here
                self.gpu_jpeg_failures += 1
                if self.gpu_jpeg_failures >= _GPU_JPEG_MAX_FAILURES:
                    # e.g. a torchvision built without nvJPEG: each batch would be tried, then decoded one picture at
                    # a time on this thread; the decode threads take over from the next file read on
                    self.gpu_jpeg = False
                    self.emit(Event("note", message=f"JPEG decoding on the GPU failed for {self.gpu_jpeg_failures} "
                                    f"batches in a row ({type(e).__name__}: {str(e)[:120]}); decoding on the CPU "
                                    "from now on"))
        kept, pictures = [], []
        for it in chunk:
            try:
                img = self._load(it.pixels.data, self.plan.contents[it.ci])
            except MambastError as e:
                for si in sis:
                    self.item_error(it.ci, si, e)
                continue
            kept.append(it)
            pictures.append(image_to_array(img))
        with self.lock:
            self.report.gpu_decode_fallbacks += len(chunk)
        return kept, (upload_frames(pictures, self.engine.device) if kept else None)

    # -- writing ----------------------------------------------------------------------------------------------
    def submit_writes(self, chunk: list[_Item], out: Any, si: int, ready: Any = None) -> None:
        """Hand one batch of results to the writers: one budget reservation and one hand-off per batch (the engine
        thread should spend as little as possible on Python-level work: each lock or queue operation hands the GIL
        back and may wait a switch interval to get it again while other threads run Python code).

        Args:
            chunk: the batch's items.
            out: its results, one per item along the first dimension (numpy uint8, a CPU float tensor, or a pinned
                uint8 tensor still being filled by the GPU when `ready` is given).
            si: the style index.
            ready: a CUDA event recorded after the copy into `out`; the dispatcher waits for it.
        """
        per = int(np.prod(out.shape[1:])) * (out.itemsize if isinstance(out, np.ndarray) else out.element_size())
        t0 = time.perf_counter()
        if not self.write_budget.acquire(per * len(chunk), lambda: self.fatal is not None):
            return
        self._timed("write_wait", t0)
        self.dispatcher.submit(self._dispatch, chunk, out, si, ready, per)

    def _dispatch(self, chunk: list[_Item], out: Any, si: int, ready: Any, per: int) -> None:
        handed = 0
        try:
            if ready is not None:
                t0 = time.perf_counter()
                _wait_event(ready)          # a CUDA error surfaces here (asynchronously): it stops the run below
                self._timed("dispatch_gpu_wait", t0)
                out = out.numpy()
            for it, o in zip(chunk, out):
                if self.fatal is not None:
                    break
                fut = self.writer.submit(self._write, it, si, o)
                handed += 1
                fut.add_done_callback(lambda f: self.write_budget.release(per))
        except BaseException as e:  # the engine thread may be waiting for budget: never leave it reserved
            self._fail_run(e)
        finally:
            self.write_budget.release(per * (len(chunk) - handed))

    def _write(self, it: _Item, si: int, out: Any) -> None:
        t0 = time.perf_counter()
        try:
            if self.fatal is not None:
                return
            img = Image.fromarray(out, "RGB") if isinstance(out, np.ndarray) else tensor_to_image(out)
            data = encode_image(img, self.plan.fmt, self.opts.quality)
            target = self.plan.output_for(it.ci, si)
            if target is None:
                assert self.stdout_sink is not None, "plan has no output folder and no stdout sink"
                self.stdout_sink(data)
            else:
                d = os.fspath(target.parent)
                with self.lock:
                    first = d not in self.cleaned_dirs
                    self.cleaned_dirs.add(d)
                if first:
                    clean_stale_parts(d)
                write_atomic(target, data, fsync=self.opts.fsync)
            self.emit(Event("ok", input=self.plan.contents[it.ci].display, style=self.plan.styles[si].display,
                            output="-" if target is None else os.fspath(target),
                            seconds=time.perf_counter() - it.t0))
        except OutputError as e:
            self._fail_run(e)
        except MambastError as e:
            self.item_error(it.ci, si, e)
        except BaseException as e:  # a bug: surface it in the calling thread
            self._fail_run(e)
        finally:
            self._timed("write_busy", t0)

    # -- main loop --------------------------------------------------------------------------------------------
    def run(self) -> Report:
        t0 = time.perf_counter()
        for ev in self.plan.start_events():
            self.emit(ev)
        n_write = _cpu_workers(self.opts.write_workers)
        decoder = ThreadPoolExecutor(_cpu_workers(self.opts.decode_workers), thread_name_prefix="mambast-decode")
        self.writer = ThreadPoolExecutor(n_write, thread_name_prefix="mambast-write")
        self.engine_pool = ThreadPoolExecutor(1, thread_name_prefix="mambast-engine", initializer=self._engine_thread_init)
        self.dispatcher = ThreadPoolExecutor(1, thread_name_prefix="mambast-dispatch")
        try:
            if self.plan.n_pending:
                self.encode_styles()
                buckets: dict[tuple[int, int, bool], list[_Item]] = {}
                waiting = 0
                for item in self.decoded(decoder):
                    size = _bucket(item)
                    buckets.setdefault(size, []).append(item)  # type: ignore[arg-type]
                    waiting += 1
                    if len(buckets[size]) >= self.batch_for(size[:2]):  # type: ignore[arg-type]
                        waiting -= len(buckets[size])
                        self.process(buckets.pop(size))  # type: ignore[arg-type]
                    elif waiting > 2 * self._queue_size():  # many sizes: send the fullest bucket early
                        fullest = max(buckets, key=lambda k: len(buckets[k]))
                        waiting -= len(buckets[fullest])
                        self.process(buckets.pop(fullest))
                    if self.stop.is_set():
                        break
                for size in list(buckets):
                    if self.stop.is_set():
                        break
                    self.process(buckets.pop(size))
        except KeyboardInterrupt:
            self.report.interrupted = True
            self.stop.set()
        finally:
            decoder.shutdown(wait=True, cancel_futures=True)
            if self.report.interrupted:
                self.stop.set()          # a batch still queued for the engine is dropped, the running one finishes
            self.engine_pool.shutdown(wait=True)
            self.dispatcher.shutdown(wait=True)
            self.writer.shutdown(wait=True)  # writes in flight finish (atomically); nothing else is started
            self.report.elapsed_s = time.perf_counter() - t0
            self.report.style_cache_hits, self.report.style_encodes = engine_counters(self.engine)
        if self.fatal is not None:
            raise self.fatal
        if self.stop.is_set() and not self.report.interrupted:
            self.report.interrupted = True  # stopped from outside (the stop event)
        return self.report


def run_plan(
    plan: Plan,
    engine: Any,
    opts: RunOptions | None = None,
    *,
    on_event: EventCallback | None = None,
    stdout_sink: Callable[[bytes], None] | None = None,
    stop: threading.Event | None = None,
    jobs: Iterable[tuple[int, tuple[int, ...]]] | None = None,
    style_handles: dict[int, Any] | None = None,
) -> Report:
    """Execute a plan with an engine (see the module docstring for the data flow).

    Args:
        plan: from :func:`mambast_cli.pipeline.plan_jobs`.
        engine: an Engine (or the fake one): ``encode_style``, ``stylize``, ``max_batch``, ``stats``.
        opts: processing options.
        on_event: called once per item (``ok``/``error``/``skipped``) and for notes; serialised by a lock.
        stdout_sink: receives the encoded bytes when the plan writes to stdout.
        stop: set it from another thread to stop the run early (treated like Ctrl-C).
        jobs: the (content index, style indices) to compute, in order, instead of ``plan.pending`` (a multi-worker
            run feeds each worker from a shared queue this way; it may block). Styles are still encoded from
            ``plan.pending``.
        style_handles: style handles already encoded with this engine, by style index (not encoded again).

    Returns:
        The Report.

    Raises:
        OutputError: the output location cannot be written (the run stops; finished outputs stay).
    """
    return _Runner(plan, engine, opts or RunOptions(), on_event, stdout_sink, stop, jobs, style_handles).run()
