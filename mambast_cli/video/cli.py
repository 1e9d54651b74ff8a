"""The ``mambast video`` command: options → run_videos → progress, summary and exit code.

Registered by mambast_cli/cli.py with ``app.command("video")(video_command)``. The only place of the video feature
that prints or exits. Human text goes to stderr (rich progress on a TTY, plain lines otherwise); ``--json`` writes
NDJSON events on stdout. torch and av are imported inside the command body.

Exit codes: 0 every input done or skipped, 1 some inputs failed, 2 usage, 3 cannot start (weights, device, output),
130 interrupted (the output being written is removed), 143 the same after SIGTERM.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from mambast_cli.errors import MambastError, UsageError, interrupt_exit_code

DEFAULT_SMOOTH = 4  # keep equal to mambast_cli.video.stability.DEFAULT_SMOOTH (not imported: it would load nothing heavy,
#                     but the CLI module stays import-light on purpose)


def _json_line(d: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(d, ensure_ascii=True) + "\n")
    sys.stdout.flush()


def _disp(s: Any) -> str:
    s = "" if s is None else str(s)
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in s)


def _fmt_secs(s: float | None) -> str:
    if s is None:
        return "?"
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f}s"
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


class _Renderer:
    """Video events → stderr text / rich progress, and NDJSON on stdout with --json.

    One progress display for the run: a bar per video being processed (several at once with --devices), each
    removed when its video is done or failed.
    """

    def __init__(self, console: Any, *, json_mode: bool, quiet: bool) -> None:
        self.console, self.json_mode, self.quiet = console, json_mode, quiet
        self.tty = console.is_terminal and not quiet
        self.progress: Any = None
        self.tasks: dict[str, Any] = {}
        self.last_plain: dict[str, float] = {}
        self.plain_every = float(os.environ.get("MAMBAST_PROGRESS_EVERY", "5"))

    def _bar(self, name: str, ev: dict[str, Any]) -> None:
        from rich.markup import escape

        old = self.tasks.pop(name, None)  # the same input started again (cannot happen): one bar per input
        if old is not None and self.progress is not None:
            self.progress.remove_task(old)
        if self.progress is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                     TextColumn("{task.completed}/{task.total} frames"), TextColumn("{task.fields[fps]}"),
                                     TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True)
            self.progress.start()
        desc = escape(os.path.basename(name))[:40]
        if ev.get("device"):
            desc += f" [dim]({escape(_disp(ev['device']))})[/]"
        self.tasks[name] = self.progress.add_task(desc, total=ev.get("frames_total"), fps="")

    def _drop(self, name: str) -> None:
        task = self.tasks.pop(name, None)
        if task is not None and self.progress is not None:
            self.progress.remove_task(task)
        if not self.tasks:
            self.close()

    def __call__(self, ev: dict[str, Any]) -> None:
        from rich.markup import escape

        if self.json_mode:
            _json_line(ev)
        kind = ev.get("event")
        name = _disp(ev.get("input"))
        if kind == "start":
            if self.tty:
                self._bar(name, ev)
            elif not self.quiet:
                on = f" on {_disp(ev['device'])}" if ev.get("device") else ""
                self.console.print(f"video: {name} → {_disp(ev.get('output'))} ({ev.get('width')}x{ev.get('height')}, "
                                   f"{ev.get('frames_total') or '?'} frames){on}", markup=False)
        elif kind == "progress":
            if self.progress is not None and name in self.tasks:
                self.progress.update(self.tasks[name], completed=ev["frames"], fps=f"{ev['fps']:.1f} fps")
            elif not self.quiet and time.perf_counter() - self.last_plain.get(name, 0.0) >= self.plain_every:
                self.last_plain[name] = time.perf_counter()
                tot = ev.get("frames_total")
                self.console.print(f"video: {name}: {ev['frames']}/{tot or '?'} frames, {ev['fps']:.1f} fps, "
                                   f"ETA {_fmt_secs(ev.get('eta_s'))}", markup=False)
        elif kind == "warning" and not self.quiet:
            self.console.print(f"[yellow]note:[/] {escape(name)}: {escape(_disp(ev.get('message')))}")
        elif kind == "note" and not self.quiet:
            self.console.print(f"[yellow]note:[/] {escape(_disp(ev.get('message')))}")
        elif kind == "skip" and not self.quiet:
            self.console.print(f"[yellow]skipped:[/] {escape(name)}: {escape(_disp(ev.get('output')))} exists "
                               f"(use --overwrite)")
        elif kind == "error":
            self._drop(name)
            hint = f"  [dim](hint: {escape(ev['hint'])})[/]" if ev.get("hint") else ""
            self.console.print(f"[red]failed:[/] {escape(_disp(ev.get('message')))}{hint}")
        elif kind == "done":
            self._drop(name)
            if not self.quiet:
                t = ev.get("timing") or {}
                self.console.print(f"[green]done:[/] {escape(_disp(ev.get('output')))}: {ev['frames']} frames in "
                                   f"{ev['seconds']:.1f}s ({ev.get('fps') or 0:.1f} fps; decode {t.get('decode_s', 0):.1f}s, "
                                   f"stylize {t.get('stylize_s', 0):.1f}s, encode {t.get('encode_s', 0):.1f}s)")

    def close(self) -> None:
        """Stop the progress display (if any)."""
        self.tasks.clear()
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _fail(e: MambastError, console: Any, json_mode: bool) -> NoReturn:
    from rich.markup import escape

    console.print(f"[red]error:[/] {escape(_disp(e))}" + (f"  [dim](hint: {escape(e.hint)})[/]" if e.hint else ""))
    if json_mode:
        _json_line({"event": "fatal", "error": type(e).__name__, "message": str(e), "hint": e.hint,
                    "exit_code": e.exit_code})
    raise typer.Exit(e.exit_code)


def video_command(
    inputs: Annotated[list[str], typer.Argument(help="Video files or folders of videos.", metavar="INPUT...")],
    style: Annotated[str, typer.Option("--style", "-s", help="Style image.")],
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o",
        help="Output file (.mp4/.mov/.mkv/.webm), folder (several inputs), or image sequence like frames/%06d.png. "
             "Default: {stem}__{style}.mp4 next to each input; the extension follows --codec (.mov for ProRes/DNxHD/QuickTime RLE, .mkv for FFV1 and other lossless codecs, .webm for VP8/VP9).")] = None,
    start: Annotated[float, typer.Option(min=0.0, help="Start at this time (seconds).")] = 0.0,
    duration: Annotated[Optional[float], typer.Option(min=0.0, help="Only this many seconds.")] = None,
    size: Annotated[int, typer.Option(min=0, help="Shorter side to process at (0 = the source size).")] = 0,
    max_side: Annotated[int, typer.Option(min=0, help="Cap on the longer side after --size (0 = no cap).")] = 0,
    style_size: Annotated[Optional[int], typer.Option(min=16, help="Size the style picture is used at (default: the engine's).")] = None,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Style strength: 0 = the content, 1 = full style.")] = 1.0,
    preserve_color: Annotated[bool, typer.Option("--preserve-color", help="Keep the content's colours.")] = False,
    smooth: Annotated[int, typer.Option(
        "--smooth", min=0, help="Temporal smoothing: average up to N frames where the picture does not move (0 or 1 = off).")
    ] = DEFAULT_SMOOTH,
    no_smooth: Annotated[bool, typer.Option("--no-smooth", help="Turn temporal smoothing off (same as --smooth 0).")] = False,
    codec: Annotated[str, typer.Option(help="Video encoder (FFmpeg name): libx264, libx265, libvpx-vp9, prores_ks, ffv1, ...")] = "libx264",
    crf: Annotated[int, typer.Option(min=0, max=63, help="Quality for x264/x265/VP9/AV1 (lower = better, bigger).")] = 18,
    preset: Annotated[str, typer.Option(help="Encoder speed preset (x264/x265: ultrafast ... veryslow; veryfast keeps "
                                              "up with the GPU at 1080p).")] = "veryfast",
    pix_fmt: Annotated[Optional[str], typer.Option(help="Encoder pixel format (default yuv420p where the encoder has it).")] = None,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Do not copy audio and subtitle streams.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed of the style-token permutations (fixed for the whole video).")] = 0,
    batch_size: Annotated[Optional[int], typer.Option(min=1, max=256, help="Frames per GPU batch (default: from free memory, at most 16).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo outputs that already exist (default: skip them).")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    devices: Annotated[Optional[str], typer.Option(
        help="Several devices of this host, one worker each, one video at a time per worker: all, GPU indices "
             "(0,1,3) or cpu,cpu.")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Weights file (.safetensors); default: the bundled weights.")] = None,
    precision: Annotated[str, typer.Option(help="auto, fp32 or bf16.")] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="NDJSON events on stdout; humans read stderr.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
) -> None:
    """Stylize every INPUT video with --style, keeping its timing, audio and subtitles."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    renderer = _Renderer(console, json_mode=json_out, quiet=quiet)
    try:
        code = _run(renderer, inputs, style, output, start, duration, size, max_side, style_size, alpha, preserve_color,
                    0 if no_smooth else smooth, codec, crf, preset, pix_fmt, not no_audio, seed, batch_size or 0,
                    overwrite, device, devices, weights, precision, json_out, quiet)
    except MambastError as e:
        renderer.close()
        _fail(e, console, json_out)
    except KeyboardInterrupt:
        renderer.close()
        console.print("[yellow]interrupted:[/] the video being written was discarded; finished outputs are complete")
        if json_out:
            _json_line({"event": "summary", "interrupted": True, "exit_code": interrupt_exit_code()})
        raise typer.Exit(interrupt_exit_code())
    raise typer.Exit(code)


def _run(renderer: _Renderer, inputs: list[str], style: str, output: str | None, start: float,
         duration: float | None, size: int, max_side: int, style_size: int | None, alpha: float,
         preserve_color: bool, smooth: int, codec: str, crf: int, preset: str, pix_fmt: str | None, copy: bool,
         seed: int, batch: int, overwrite: bool, device: str, devices: str | None, weights: Path | None,
         precision: str, json_out: bool, quiet: bool) -> int:
    try:
        import av  # noqa: F401
    except ImportError as e:
        raise UsageError("the video command needs PyAV", hint="pip install av") from e
    from mambast_cli.video.run import VideoOptions, expand_inputs, plan_jobs, run_videos

    if precision not in ("auto", "fp32", "bf16"):
        raise UsageError(f"--precision must be auto, fp32 or bf16, not {precision!r}")
    if not os.path.isfile(style):
        raise UsageError(f"style image not found: {style}")
    if devices is not None and device != "auto":
        raise UsageError("--device and --devices both given", hint="use --devices for several devices, --device for one")
    opts = VideoOptions(output=output, overwrite=overwrite, start=start, duration=duration, size=size,
                        max_side=max_side, style_size=style_size, alpha=alpha, preserve_color=preserve_color,
                        codec=codec, crf=crf, preset=preset or None, pix_fmt=pix_fmt, smooth=smooth, batch=batch,
                        copy_streams=copy)
    # plan first (cheap): nothing to do → no engine, no GPU start-up
    files = expand_inputs(list(inputs))
    if not files:
        raise UsageError("no video inputs found", hint="give video files or folders holding them")
    jobs = plan_jobs(files, style, opts)
    engine_kwargs: dict[str, Any] = dict(weights=os.fspath(weights) if weights else None, precision=precision,
                                         seed=seed)
    if devices is not None:
        from mambast_cli.pipeline.multi import parse_devices

        devs = parse_devices(devices)
        if len(devs) > 1:
            from mambast_cli.video.multi import run_videos_multi

            report = run_videos_multi(files, style, devs, engine_kwargs, opts, on_event=renderer)
            return _summary(renderer, report, json_out, quiet)
        device = devs[0]
    engine: Any = None
    pending = [j for j in jobs if overwrite or not os.path.exists(
        j.output if not j.sequence else os.path.join(os.path.dirname(j.output) or ".", os.path.basename(j.output) % 1))]
    if pending:
        import torch  # noqa: F401

        from mambast_cli.pipeline import create_engine

        engine = create_engine(device=device, **engine_kwargs)
    report = run_videos(files, style, engine, opts, on_event=renderer)
    return _summary(renderer, report, json_out, quiet)


def _summary(renderer: _Renderer, report: Any, json_out: bool, quiet: bool) -> int:
    """Close the display, print the summary line (and the JSON summary); return the exit code (0 or 1)."""
    renderer.close()
    code = 0 if report.ok else 1
    if json_out:
        _json_line({"event": "summary", "done": report.count("done"), "skipped": report.count("skipped"),
                    "failed": report.count("failed"), "exit_code": code})
    if not quiet:
        renderer.console.print(f"{report.count('done')} done, {report.count('failed')} failed, "
                               f"{report.count('skipped')} skipped", markup=False)
    return code
