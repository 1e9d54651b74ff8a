"""The video job: plan outputs, then decode → stylise in batches → encode, one video at a time, in three threads.

Owns planning (output names, skip/overwrite), the threaded pipeline and the per-video report. Never prints: it
tells an ``on_event(dict)`` callback (the CLI renders those as text, rich progress or NDJSON). Raises UsageError
for bad option combinations before any work; per-input problems (InputError) are recorded and the run goes on;
OutputError / device errors stop the run.

Pipeline (per video):
    reader thread: demux + decode (PyAV thread_type AUTO) → upright RGB uint8 at the processing size
        → bounded queue →
    main thread: batches of frames, stacked into one of two pinned buffers in turn → Engine.stylize (one
        StyleHandle for the whole run: fixed permutations; CUDA graphs for frames up to 1 MP) → optional
        TemporalSmoother → uint8 on the device → asynchronous copy back. It only queues GPU work and never
        waits for it (on CUDA), so the next batch is stacked while the GPU runs this one.
        → bounded queue →
    writer thread: waits for each batch's copy (a CUDA event), then colour conversion (RGB frames only) + encode + mux (copied
        audio/subtitle packets flow through the same queues, in order), into a hidden temporary file renamed at
        the end. With env MAMBAST_VIDEO_ENCODER=process the
        writer thread only hands frames and packets to a child process that encodes (encoder_proc.py: PyAV holds
        the GIL while it converts and encodes, which stalls the main thread's kernel launches).
A failing input leaves no output file; Ctrl-C removes the temporary file.
"""
from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mambast_cli.errors import InputError, MambastError, OutputError, UsageError
from mambast_cli.io import clean_stale_parts, frames_to_device
from mambast_cli.io.transfer import PinnedPair, download_async, record_event, timing_mark, wait_event
from mambast_cli.video import io as vio
from mambast_cli.video.encoder_proc import make_writer
from mambast_cli.video.yuv import yuv420_planes

EventFn = Callable[[dict[str, Any]], None]
# frames are wrapped with torch.from_numpy only to be read (stacked into the upload buffer); see pipeline/run.py
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
MAX_BATCH = 16
_QUEUE_FRAMES = 24
# what may wait for the encode thread: batches of stylised frames (big), and copied audio/subtitle packets (small),
# counted apart: when packets took the batches' places in one 4-item queue, the main thread stalled behind ~25 audio
# packets per batch until the encode thread had the previous batch off the GPU, and the GPU idled 1/3 of a 1080p job
_OUT_BATCHES = 4
_OUT_PACKETS = 4096


@dataclass
class VideoOptions:
    """Everything the video job takes besides inputs, style and engine (mirrors the CLI flags)."""

    output: str | None = None            # file, folder, or image-sequence pattern (%06d); None: next to each input
    overwrite: bool = False
    start: float = 0.0                   # seconds
    duration: float | None = None        # seconds
    size: int = 0                        # shorter side (0: source size)
    max_side: int = 0                    # cap on the longer side (0: none)
    style_size: int | None = None
    alpha: float = 1.0
    preserve_color: bool = False
    codec: str = "libx264"
    crf: int = 18
    preset: str | None = "veryfast"     # x264 medium held 1080p at ~21 fps on 16 cores: slower than the model
    pix_fmt: str | None = None
    encoder_threads: int = 0
    smooth: int = 0                      # TemporalSmoother n (0/1: off)
    batch: int = 0                       # frames per engine call (0: engine.max_batch, capped at MAX_BATCH)
    copy_streams: bool = True


@dataclass
class VideoJob:
    """One input and where its result goes."""

    input: str
    output: str
    sequence: bool = False               # output is an image-sequence pattern


@dataclass
class ItemResult:
    """What happened to one input."""

    input: str
    output: str | None
    status: str                          # "done" | "skipped" | "failed" ("pending" only while a run goes on)
    message: str = ""
    frames: int = 0
    seconds: float = 0.0
    timing: dict[str, float] = field(default_factory=dict)


@dataclass
class VideoReport:
    """The outcome of a run."""

    items: list[ItemResult] = field(default_factory=list)
    style_encodes: int | None = None     # multi-device runs: style encodings over all workers (disk-cache hits excluded)

    @property
    def ok(self) -> bool:
        """True when no input failed."""
        return all(i.status != "failed" for i in self.items)

    def count(self, status: str) -> int:
        """How many items ended with ``status``."""
        return sum(1 for i in self.items if i.status == status)


# ------------------------------------------------------------------------------------------------ planning
def _safe(name: str) -> str:
    try:
        from mambast_cli.io import safe_component
        return safe_component(name)
    except ImportError:  # pragma: no cover - io lands with the CLI owner
        return "".join(ch if ch.isprintable() and ch not in "/\\" else "_" for ch in name).lstrip(".") or "_"


def _output_name(stem: str, style_stem: str, ext: str, dedup: int) -> str:
    try:
        from mambast_cli.io import output_name
        return output_name(stem, style_stem, ext, dedup=dedup)
    except ImportError:  # pragma: no cover
        return f"{_safe(stem)}__{_safe(style_stem)}{'_%d' % dedup if dedup > 1 else ''}{ext}"


def expand_inputs(inputs: list[str | os.PathLike[str]]) -> list[str]:
    """Files as given; folders replaced by the video files directly inside them (sorted, hidden ones skipped, and
    so are earlier outputs: a ``{stem}__{style}...`` file next to a video named ``{stem}``, so that rerunning a
    folder without ``-o``, whose outputs go next to the inputs, never stylizes them again).

    Args:
        inputs: paths from the command line.

    Returns:
        File paths (missing ones are kept, to be reported as failed).
    """
    out: list[str] = []
    for p in map(os.fspath, inputs):
        if os.path.isdir(p):
            names = [n for n in sorted(os.listdir(p)) if not n.startswith(".")
                     and Path(n).suffix.lower() in vio.VIDEO_EXTENSIONS and os.path.isfile(os.path.join(p, n))]
            stems = {_safe(Path(n).stem) for n in names}
            for name in names:
                parts = Path(name).stem.split("__")
                if any("__".join(parts[:k]) in stems for k in range(1, len(parts))):
                    continue  # {stem}__{style}: an earlier run's output next to its input (the default -o)
                out.append(os.path.join(p, name))
        else:
            out.append(p)
    return out


def plan_jobs(inputs: list[str], style: str, opts: VideoOptions) -> list[VideoJob]:
    """Decide each input's output path.

    Rules: ``-o x/%06d.png`` writes an image sequence (several inputs need ``{stem}`` in it); ``-o name.mp4`` with
    one input writes that file; ``-o folder`` (existing, ending in a separator, without extension, or with several
    inputs) writes ``folder/{stem}__{style}.mp4``; no ``-o`` writes that name next to each input. Clashing names get
    ``_2``, ``_3``...

    Args:
        inputs: expanded input files.
        style: the style image path.
        opts: options.

    Returns:
        One job per input, in order.

    Raises:
        UsageError: contradictory output settings, or ``-o`` naming the (one) input itself.
    """
    style_stem = Path(style).stem
    ext = vio.default_ext(opts.codec)
    o = opts.output
    jobs: list[VideoJob] = []
    if o is not None and vio.parse_sequence_pattern(o):
        if len(inputs) > 1 and "{stem}" not in o:
            raise UsageError("several inputs cannot share one image-sequence pattern",
                             hint="put {stem} in it, e.g. -o 'frames/{stem}/%06d.png'")
        for p in inputs:
            jobs.append(VideoJob(p, o.replace("{stem}", _safe(Path(p).stem)), sequence=True))
        return jobs
    as_file = (o is not None and len(inputs) == 1 and not os.path.isdir(o) and not o.endswith(("/", os.sep))
               and Path(o).suffix != "")
    if as_file:
        assert o is not None
        if Path(o).suffix.lower() not in vio.CONTAINERS:
            raise UsageError(f"unknown video container {Path(o).suffix} for -o {o}",
                             hint=f"use one of {', '.join(sorted(vio.CONTAINERS))}, or a %06d.png image sequence")
        if os.path.exists(o) and os.path.realpath(o) == os.path.realpath(inputs[0]):
            raise UsageError(f"-o {o} is the input itself: the output would overwrite it", hint="choose another -o")
        return [VideoJob(inputs[0], o)]
    if o is not None and len(inputs) > 1 and not os.path.isdir(o) and Path(o).suffix.lower() in vio.CONTAINERS:
        raise UsageError(f"-o {o} is a file name but there are {len(inputs)} inputs", hint="give a folder as -o")
    used: set[str] = set()
    for p in inputs:
        folder = o if o is not None else (os.path.dirname(p) or ".")
        dedup = 1
        while True:
            q = os.path.join(folder, _output_name(Path(p).stem, style_stem, ext, dedup))
            if os.path.normpath(q) not in used:
                break
            dedup += 1
        used.add(os.path.normpath(q))
        jobs.append(VideoJob(p, q))
    return jobs


def _exists(job: VideoJob) -> bool:
    if job.sequence:
        return os.path.exists(os.path.join(os.path.dirname(job.output) or ".", os.path.basename(job.output) % 1))
    return os.path.exists(job.output)


# ------------------------------------------------------------------------------------------------ style
def load_style(engine: Any, style: str, style_size: int | None) -> Any:
    """Read the style image and build its StyleHandle (once per run: every video uses the same permutations).

    Args:
        engine: the Engine.
        style: path to the style image.
        style_size: passed to Engine.encode_style.

    Returns:
        The StyleHandle.

    Raises:
        UsageError: the style image cannot be read.
    """
    from mambast_cli.io import image_to_tensor, load_image, read_input_bytes

    try:
        data = read_input_bytes(style)
        img = load_image(data, name=style)
    except InputError as e:
        raise UsageError(f"cannot use style {style}: {e}", hint=e.hint) from e
    key = hashlib.sha256(data).hexdigest()
    return engine.encode_style(image_to_tensor(img), key=key, style_size=style_size)


# ------------------------------------------------------------------------------------------------ the pipeline
_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _put(q: "queue.Queue[Any]", item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _acquire(slots: threading.Semaphore, stop: threading.Event) -> bool:
    """Take one slot, or give up once `stop` is set (False)."""
    while not stop.is_set():
        if slots.acquire(timeout=0.1):
            return True
    return False


def _get(q: "queue.Queue[Any]", stop: threading.Event, check: Callable[[], None]) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            check()
            if stop.is_set():
                return _END


def _to_uint8(y: Any) -> Any:
    """(B,3,H,W) float [0,1] → (B,H,W,3) uint8 on the same device (round half up)."""
    import torch

    return y.detach().clamp(0, 1).mul(255).add_(0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


@dataclass
class _Batch:
    """Stylised frames on their way to the writer: valid once `ready` (a CUDA event, or None) has completed."""

    pts: list[int]
    frames: Any                      # (B, H, W, 3) uint8 RGB, or (B, H*3/2, W) packed YUV 4:2:0; host (pinned on CUDA)
    ready: Any = None
    start: Any = None                # CUDA event (timing) recorded before the batch's upload: GPU busy/idle time


def process_video(
    job: VideoJob, engine: Any, handle: Any, opts: VideoOptions, *, on_event: EventFn | None = None,
    cancel: threading.Event | None = None,
) -> ItemResult:
    """Stylise one video (see the module docstring for the pipeline).

    Args:
        job: input and output.
        engine: the Engine (encode_style/stylize/max_batch).
        handle: the StyleHandle from :func:`load_style`.
        opts: options.
        on_event: progress callback.
        cancel: set it from another thread to stop early (treated as an interruption).

    Returns:
        The ItemResult (status "done").

    Raises:
        InputError: this input is unreadable, corrupt or has no frames in range.
        OutputError: the output cannot be written.
    """
    import torch

    from mambast_cli.io import target_size
    from mambast_cli.video.decoder_proc import decoder_mode, read_frames_in_process
    from mambast_cli.video.stability import TemporalSmoother

    emit = on_event or (lambda e: None)
    t_start = time.perf_counter()
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        emit({"event": "warning", "input": job.input, "message": msg})

    if os.path.exists(job.output) and os.path.samefile(job.input, job.output):
        raise InputError(f"{job.input}: the output would overwrite the input", hint="choose another -o")
    info = vio.probe(job.input)
    W, H = target_size(info.width, info.height, size=opts.size, max_side=opts.max_side,
                       min_side=16)  # video encoders need even sides ≥ 2: keep tiny videos at ≥ 16 px
    if job.sequence:
        ew, eh = W, H
        writer: Any = vio.ImageSequenceWriter(job.output, width=ew, height=eh)
        if info.copy_streams:
            warn("audio/subtitle streams are not written to an image sequence")
    else:
        pix_fmt = vio.choose_pix_fmt(opts.codec, opts.pix_fmt)
        ew, eh = vio.encoder_size(W, H, pix_fmt)
        if (ew, eh) != (W, H):
            warn(f"{W}x{H} is odd for {pix_fmt}: cropped 1 px to {ew}x{eh}")
        writer = make_writer(job.output, info, width=ew, height=eh, codec=opts.codec, pix_fmt=pix_fmt,
                                 crf=opts.crf, preset=opts.preset, threads=opts.encoder_threads,
                                 copy=opts.copy_streams, on_warning=warn)
    total = info.frames
    if info.rate and (opts.start or opts.duration is not None) and info.duration_s:
        span = max(0.0, info.duration_s - opts.start)
        if opts.duration is not None:
            span = min(span, opts.duration)
        total = int(round(span * float(info.rate)))
    emit({"event": "start", "input": job.input, "output": job.output, "width": ew, "height": eh,
          "source_width": info.width, "source_height": info.height, "rotation": info.rotation,
          "frames_total": total or None, "fps": float(info.rate) if info.rate else None})

    # CUDA graphs only up to the engine's image limit (1 MP, so 720p but not 1080p): at 1080p they gained nothing on an
    # H100 (58.6 vs 60.7 fps of stylizing alone) and one full job stalled 14 s in them (BENCHMARKS.md, session 6)
    batch = opts.batch or int(min(MAX_BATCH, max(1, engine.max_batch(H, W))))
    if not opts.batch and getattr(engine, "max_graph_batch", None) is not None:
        graph_batch = engine.max_graph_batch(H, W)     # e.g. 14 at 1080p: 16 frames would be rendered in two calls
        if graph_batch:
            batch = min(batch, graph_batch)
    smoother = TemporalSmoother(opts.smooth) if opts.smooth > 1 else None
    # YUV 4:2:0 made on the device when the writer takes it (video/yuv.py): the encode thread skips swscale
    layout = getattr(writer, "yuv420_layout", lambda: None)()
    if os.environ.get("MAMBAST_VIDEO_GPU_YUV", "1") == "0":
        layout = None
    # frames go to the engine's device as uint8, stacked into two pinned buffers in turn (PinnedPair waits for the
    # upload that last read a buffer before it is refilled); stand-in engines without a device: CPU
    dev = getattr(engine, "device", None)
    dev = dev if isinstance(dev, torch.device) else torch.device("cpu")
    staging = PinnedPair()      # plain memory without CUDA
    stop = cancel or threading.Event()
    q_in: queue.Queue[Any] = queue.Queue(maxsize=max(_QUEUE_FRAMES, 2 * batch))
    q_out: queue.Queue[Any] = queue.Queue()        # bounded by the two kinds of slots below
    batch_slots = threading.Semaphore(_OUT_BATCHES)
    packet_slots = threading.Semaphore(_OUT_PACKETS)
    rstats: dict[str, float] = {}
    # the writer's GPU timeline (CUDA only): per batch, upload → frames back (busy), and the gaps in between (idle:
    # the GPU had finished the previous batch before this one was queued)
    wstats = {"gpu_wait_s": 0.0, "gpu_busy_s": 0.0, "gpu_idle_s": 0.0, "last_ready_s": 0.0}
    first_launch_s = 0.0        # when the first batch was queued (host clock, from t_start)
    mstats = {"read_wait_s": 0.0, "buffer_wait_s": 0.0, "stack_s": 0.0, "writer_wait_s": 0.0,   # the main thread
              "packet_wait_s": 0.0}
    errors: list[BaseException] = []

    # the reader runs in this process's thread, or (MAMBAST_VIDEO_DECODER=process) feeds it from a child process
    read = read_frames_in_process if decoder_mode() == "process" else vio.read_frames

    def reader() -> None:
        items = read(info, size=(W, H), start_s=opts.start, duration_s=opts.duration,
                     copy=opts.copy_streams and not job.sequence, stats=rstats)
        try:
            for item in items:
                if not _put(q_in, item, stop):
                    return
            _put(q_in, _END, stop)
        except BaseException as e:  # noqa: BLE001  handed to the main thread
            _put(q_in, _Failed(e), stop)
        finally:
            items.close()            # now, not when collected: the file, or the decoder process, is let go

    def write_loop() -> None:
        prev_ready = None
        try:
            while True:
                item = _get(q_out, stop, lambda: None)
                if item is _END:
                    return
                if isinstance(item, vio.CopiedPacket):
                    writer.mux_copy(item.index, item.packet)
                    packet_slots.release()
                else:
                    t0 = time.perf_counter()
                    wait_event(item.ready)      # a CUDA error surfaces here: it stops the job like a writer error
                    wstats["gpu_wait_s"] += time.perf_counter() - t0
                    wstats["last_ready_s"] = time.perf_counter() - t_start
                    if item.start is not None and item.ready is not None:
                        wstats["gpu_busy_s"] += item.start.elapsed_time(item.ready) / 1e3
                        if prev_ready is not None:
                            wstats["gpu_idle_s"] += max(0.0, prev_ready.elapsed_time(item.start) / 1e3)
                        prev_ready = item.ready
                    write = writer.write_yuv420 if layout is not None else writer.write
                    for pts, img in zip(item.pts, item.frames.numpy()):
                        write(img, pts)
                    batch_slots.release()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            stop.set()

    def check_writer() -> None:
        if errors:
            raise errors[0]

    rt = threading.Thread(target=reader, name="mambast-decode", daemon=True)
    wt = threading.Thread(target=write_loop, name="mambast-encode", daemon=True)
    done = 0
    stylize_s = 0.0
    last_emit = 0.0
    committed = False
    try:
        rt.start()
        wt.start()
        staging.reserve((batch, H, W, 3))     # pinned while the first frames decode, not after
        buf: list[vio.DecodedFrame] = []

        def flush() -> None:
            nonlocal done, stylize_s, last_emit, first_launch_s
            if not buf:
                return
            t0 = time.perf_counter()
            with torch.inference_mode():
                host, slot = staging.take((len(buf), *buf[0].image.shape))
                t1 = time.perf_counter()
                mstats["buffer_wait_s"] += t1 - t0            # the GPU still reading this buffer's last batch
                # one C++ call that copies without the GIL (np.stack would hand it back once per frame)
                torch.stack([torch.from_numpy(f.image) for f in buf], out=host)
                mstats["stack_s"] += time.perf_counter() - t1
                if not first_launch_s:
                    first_launch_s = time.perf_counter() - t_start
                start = timing_mark(dev)
                x = frames_to_device(host, dev)
                staging.uploaded(slot, record_event(x))
                y = engine.stylize(x, handle, alpha=opts.alpha, preserve_color=opts.preserve_color, on_device=True)
                if smoother is not None:
                    y = smoother(x, y)
                if layout is not None:
                    out = yuv420_planes(y[:, :, :eh, :ew], *layout)
                else:
                    out = _to_uint8(y)
                frames, ready = download_async(out, timing=start is not None)
            stylize_s += time.perf_counter() - t0
            item = _Batch([f.pts for f in buf], frames, ready, start)
            buf.clear()
            check_writer()
            t0 = time.perf_counter()
            if not _acquire(batch_slots, stop):
                check_writer()
                raise KeyboardInterrupt
            q_out.put(item)
            mstats["writer_wait_s"] += time.perf_counter() - t0     # the encode thread 4 batches behind
            done += len(item.pts)
            now = time.perf_counter()
            if now - last_emit >= 0.5:
                last_emit = now
                el = now - t_start
                fps = done / el if el > 0 else 0.0
                eta = (total - done) / fps if total and fps > 0 and total > done else None
                emit({"event": "progress", "input": job.input, "frames": done, "frames_total": total or None,
                      "fps": round(fps, 2), "eta_s": None if eta is None else round(eta, 1)})

        while True:
            t0 = time.perf_counter()
            item = _get(q_in, stop, check_writer)
            mstats["read_wait_s"] += time.perf_counter() - t0       # no decoded frame ready
            if item is _END:
                if stop.is_set():
                    check_writer()
                    raise KeyboardInterrupt
                break
            if isinstance(item, _Failed):
                raise item.exc
            if isinstance(item, vio.CopiedPacket):
                check_writer()
                t0 = time.perf_counter()
                if _acquire(packet_slots, stop):
                    q_out.put(item)
                mstats["packet_wait_s"] += time.perf_counter() - t0
                continue
            buf.append(item)
            if len(buf) >= batch:
                flush()
        flush()
        if done == 0:
            raise InputError(f"{job.input}: no video frames in the selected range",
                             hint="check --start/--duration" if opts.start or opts.duration else "the file may be corrupt")
        q_out.put(_END)
        wt.join()
        check_writer()
        writer.commit()
        committed = True
    finally:
        if not committed:
            stop.set()
            wt.join(timeout=30)
            rt.join(timeout=5)
            writer.abort()
    wall = time.perf_counter() - t_start
    timing = {"decode_s": round(rstats.get("decode_s", 0.0), 3), "stylize_s": round(stylize_s, 3),
              "gpu_wait_s": round(wstats["gpu_wait_s"], 3), "encode_s": round(writer.stats.get("encode_s", 0.0), 3),
              "wall_s": round(wall, 3), **{k: round(v, 3) for k, v in mstats.items()},
              # where the GPU's time went (CUDA): first batch queued after first_launch_s; busy + idle from the first
              # upload to the last frames back; tail_s = from the last frames back to the end (encoder flush, commit)
              "first_launch_s": round(first_launch_s, 3),
              **({"gpu_busy_s": round(wstats["gpu_busy_s"], 3), "gpu_idle_s": round(wstats["gpu_idle_s"], 3),
                  "tail_s": round(wall - wstats["last_ready_s"], 3)} if wstats["gpu_busy_s"] else {})}
    return ItemResult(job.input, job.output, "done", "; ".join(warnings), frames=done, seconds=wall, timing=timing)


def run_videos(
    inputs: list[str | os.PathLike[str]], style: str | os.PathLike[str], engine: Any, opts: VideoOptions, *,
    on_event: EventFn | None = None, cancel: threading.Event | None = None,
) -> VideoReport:
    """Stylise every input video with one style.

    Args:
        inputs: files and/or folders.
        style: style image path.
        engine: an Engine (or anything with its encode_style/stylize/max_batch methods).
        opts: options.
        on_event: callback for "plan", "start", "progress", "warning", "done", "skip", "error" events (dicts).
        cancel: an Event that stops the run when set (the current output is discarded).

    Returns:
        The VideoReport (``ok`` False when some input failed).

    Raises:
        UsageError: bad options (before any work).
        OutputError, WeightsError, DeviceError: the run cannot go on (the current output is discarded).
        KeyboardInterrupt: passed through after cleaning up.
    """
    emit = on_event or (lambda e: None)
    style = os.fspath(style)
    jobs, todo, report = prepare_run(inputs, style, opts, emit)
    handle = None
    for i, job in enumerate(jobs):
        if i not in todo:
            continue
        if handle is None:
            handle = load_style(engine, style, opts.style_size)
        try:
            res = process_video(job, engine, handle, opts, on_event=emit, cancel=cancel)
        except InputError as e:
            res = ItemResult(job.input, None, "failed", str(e))
            report.items[i] = res
            emit(error_event(job, e))
            continue
        report.items[i] = res
        emit(done_event(res))
    return report


def prepare_run(inputs: list[str | os.PathLike[str]], style: str, opts: VideoOptions,
                emit: EventFn) -> tuple[list[VideoJob], list[int], VideoReport]:
    """Check the options, plan the outputs, say the plan and skip the outputs that exist (shared by every runner).

    Args:
        inputs: files and/or folders.
        style: style image path.
        opts: options.
        emit: the event callback (gets "plan", then one "skip" per existing output).

    Returns:
        ``(jobs, todo, report)``: every job in input order; the indices of the jobs to run; a report whose
        ``items`` has one entry per job (skipped ones final, the others placeholders with status "pending" that
        the runner replaces).

    Raises:
        UsageError: bad options or no inputs.
    """
    _check_options(opts)
    files = expand_inputs(list(inputs))
    if not files:
        raise UsageError("no video inputs found", hint="give video files or folders holding them")
    jobs = plan_jobs(files, style, opts)
    for folder in sorted({os.path.dirname(os.path.abspath(j.output)) for j in jobs}):
        clean_stale_parts(folder)        # temporaries of a killed earlier run (files and frame folders)
    emit({"event": "plan", "inputs": len(jobs), "outputs": [j.output for j in jobs]})
    report = VideoReport()
    todo: list[int] = []
    for i, job in enumerate(jobs):
        if _exists(job) and not opts.overwrite:
            report.items.append(ItemResult(job.input, job.output, "skipped", "output exists (use --overwrite)"))
            emit({"event": "skip", "input": job.input, "output": job.output, "reason": "exists"})
        else:
            report.items.append(ItemResult(job.input, job.output, "pending"))
            todo.append(i)
    return jobs, todo, report


def done_event(res: ItemResult) -> dict[str, Any]:
    """The "done" event of a finished video.

    Args:
        res: its ItemResult.

    Returns:
        The event dict.
    """
    return {"event": "done", "input": res.input, "output": res.output, "frames": res.frames,
            "seconds": round(res.seconds, 3), "fps": round(res.frames / res.seconds, 2) if res.seconds else None,
            "timing": res.timing}


def error_event(job: VideoJob, e: MambastError) -> dict[str, Any]:
    """The "error" event of a failed video.

    Args:
        job: the job.
        e: its error.

    Returns:
        The event dict.
    """
    return {"event": "error", "input": job.input, "message": str(e), "hint": e.hint}


def _check_options(o: VideoOptions) -> None:
    if o.start < 0:
        raise UsageError("--start must be >= 0")
    if o.duration is not None and o.duration <= 0:
        raise UsageError("--duration must be > 0")
    if o.size < 0 or o.max_side < 0:
        raise UsageError("--size and --max-side must be >= 0")
    if not 0.0 <= o.alpha <= 1.0:
        raise UsageError("--alpha must be between 0 and 1")
    if not 0 <= o.crf <= 63:
        raise UsageError("--crf must be between 0 and 63")
    if o.smooth < 0:
        raise UsageError("--smooth must be >= 0")
    if o.batch < 0 or o.batch > 256:
        raise UsageError("--batch must be between 0 (auto) and 256")
    if o.output is None or not vio.parse_sequence_pattern(o.output):
        vio.choose_pix_fmt(o.codec, o.pix_fmt)   # unknown encoder → UsageError now, not per file


__all__ = ["ItemResult", "OutputError", "MambastError", "VideoJob", "VideoOptions", "VideoReport", "done_event",
           "error_event", "expand_inputs", "load_style", "plan_jobs", "prepare_run", "process_video", "run_videos"]
