"""The ``mambast`` command line: parse options, call the pipeline, render events and the report, pick the exit code.

Owns typer, rich and exit codes; nothing below this module prints or exits. Human output goes to stderr; stdout
carries only machine output (``--json`` NDJSON events, or the picture bytes with ``-o -``). torch, Pillow and the
model are imported inside command bodies, so ``mambast --version`` and ``--help`` stay instant.

Exit codes: 0 all done (or skipped because done), 1 some items failed, 2 usage error, 3 could not start
(weights, device, output folder), 130 interrupted (Ctrl-C), 143 stopped by SIGTERM (the same clean stop).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, NoReturn, Optional

import typer

from mambast_cli import __version__
from mambast_cli.errors import MambastError, OutputError, UsageError, interrupt_exit_code, stop_on_sigterm

if TYPE_CHECKING:
    from rich.console import Console

    from mambast_cli.pipeline import Event, Report

app = typer.Typer(
    name="mambast",
    help="Fast arbitrary style transfer for folders of images (Mamba-ST).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
weights_app = typer.Typer(help="Manage model weights.", no_args_is_help=True)
cache_app = typer.Typer(help="Inspect or clear the style cache.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
app.add_typer(cache_app, name="cache")


class Format(str, Enum):
    """Output formats."""

    jpg = "jpg"
    png = "png"
    webp = "webp"


class Precision(str, Enum):
    """Compute precisions."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


_DEFAULT_MAX_PIXELS = 178_956_970  # keep in sync with mambast_cli.io.images.DEFAULT_MAX_PIXELS (not imported: slow)

# Options shared by several commands.
StyleOpt = Annotated[list[str], typer.Option("--style", "-s", help="Style image (repeat for several; a folder or glob adds all its images).")]
SizeOpt = Annotated[int, typer.Option(min=0, help="Shorter side to process at, in pixels (0 = keep the original size).")]
MaxSideOpt = Annotated[int, typer.Option(min=0, help="Cap on the longer side after --size (0 = no cap).")]
StyleSizeOpt = Annotated[Optional[int], typer.Option(min=16, help="Size the style picture is used at (default: the engine's).")]
AlphaOpt = Annotated[float, typer.Option(min=0.0, max=1.0, help="Style strength: 0 = the content, 1 = full style.")]
PreserveOpt = Annotated[bool, typer.Option("--preserve-color", help="Keep the content's colours.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed (same seed, same inputs → same outputs).")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
WeightsOpt = Annotated[Optional[Path], typer.Option(help="Weights file (.safetensors); default: the bundled weights.")]
PrecisionOpt = Annotated[Precision, typer.Option(help="Compute precision.")]
MaxPixelsOpt = Annotated[int, typer.Option(min=0, help="Refuse pictures with more pixels than this (decompression-bomb guard; 0 = no limit).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="NDJSON events on stdout (one per item, then a summary); humans read stderr.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")]


def _err_console() -> "Console":
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _disp(s: str | None) -> str:
    """A name safe to print on one line (control characters escaped)."""
    if s is None:
        return ""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in s)


def _fail(e: MambastError, console: "Console", json_mode: bool = False) -> NoReturn:
    """Print one error line (and a hint) and exit with the error's code."""
    from rich.markup import escape

    console.print(f"[red]error:[/] {escape(_disp(str(e)))}" + (f"  [dim](hint: {escape(e.hint)})[/]" if e.hint else ""))
    if json_mode:
        _json_line({"event": "fatal", "error": type(e).__name__, "message": str(e), "hint": e.hint, "exit_code": e.exit_code})
    raise typer.Exit(e.exit_code)


def _json_line(d: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(d, ensure_ascii=True) + "\n")
    sys.stdout.flush()


class _Renderer:
    """Turns pipeline events into stderr lines, a progress display and (with --json) NDJSON on stdout."""

    def __init__(self, console: "Console", *, total: int, json_mode: bool, quiet: bool, label: str = "stylize") -> None:
        self.console, self.json_mode, self.quiet, self.total, self.label = console, json_mode, quiet, total, label
        self.done = self.failed = self.ok = 0
        self.t0 = time.perf_counter()
        self.last_plain = self.t0
        self.plain_every = float(os.environ.get("MAMBAST_PROGRESS_EVERY", "10"))
        self.progress: Any = None
        self.task: Any = None
        self.lock = threading.Lock()
        if not quiet and total > 0 and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                console=console, transient=False,
            )
            self.task = self.progress.add_task(label, total=total, rate="")
            self.progress.start()

    def __call__(self, ev: "Event") -> None:
        from rich.markup import escape

        if self.json_mode:
            _json_line(ev.to_dict())
        if ev.kind == "error":
            msg = ev.message or ""
            if ev.input and msg.startswith(ev.input + ": "):
                msg = msg[len(ev.input) + 2 :]
            what = _disp(ev.input or ev.style or "?")
            if ev.style and ev.input:
                what += f" × {_disp(os.path.basename(ev.style))}"
            hint = f"  [dim](hint: {escape(ev.hint)})[/]" if ev.hint else ""
            self.console.print(f"[red]failed:[/] {escape(what)}: {escape(_disp(msg))}{hint}")
        elif ev.kind == "note" and not self.quiet:
            about = ev.input or ev.style
            where = f"{escape(_disp(about))}: " if about else ""
            self.console.print(f"[yellow]note:[/] {where}{escape(_disp(ev.message))}")
        elif ev.kind == "skipped" and ev.style is None and not self.quiet:
            self.console.print(f"[yellow]skipped:[/] {escape(_disp(ev.input))}: {escape(_disp(ev.message))}")
        if ev.kind in ("ok", "error") and (ev.input and ev.style):
            self._advance(ev.kind == "error")

    def _advance(self, failed: bool) -> None:
        with self.lock:
            self.done += 1
            self.failed += failed
            now = time.perf_counter()
            rate = self.done / max(now - self.t0, 1e-9)
            if self.progress is not None:
                self.progress.update(self.task, advance=1, rate=f"{rate:.2f} img/s")
            elif not self.quiet and self.total and (now - self.last_plain >= self.plain_every or self.done == self.total):
                self.last_plain = now
                eta = (self.total - self.done) / rate if rate > 0 else 0.0
                self.console.print(f"{self.label}: {self.done}/{self.total} ({self.failed} failed), "
                                   f"{rate:.2f} img/s, ETA {_fmt_secs(eta)}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def summary(self, report: "Report") -> None:
        self.close()
        if self.json_mode:
            d = report.to_dict()
            d["exit_code"] = _exit_code(report)
            _json_line(d)
        if self.quiet:
            return
        parts = [f"[green]{report.ok} written[/]", f"{report.failed} failed" if not report.failed else f"[red]{report.failed} failed[/]",
                 f"{report.skipped} skipped"]
        line = ", ".join(parts) + f" in {_fmt_secs(report.elapsed_s)} ({report.images_per_s:.2f} img/s"
        if report.style_encodes or report.style_cache_hits:
            line += f"; style cache hits {report.style_cache_hits}"
        self.console.print(line + ")")
        if report.interrupted:
            self.console.print("[yellow]interrupted:[/] finished outputs are complete; run the same command again to do the rest")


def _fmt_secs(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


#: with MAMBAST_WORKERS_PER_GPU=auto, a folder at least this big on one GPU runs in several worker processes
AUTO_WORKERS_MIN_JOBS = 256


def auto_workers(device: str, n_jobs: int) -> str | None:
    """The ``--devices`` value for ``MAMBAST_WORKERS_PER_GPU``: several worker processes sharing the one GPU of a
    single-device run, or None (one in-process engine: the default).

    Why: in one process the decode and encode threads share Python's GIL; on an H100 host a 512² folder runs at
    ~340–360 pictures/s in one process and 387 with two worker processes (379 with four; BENCHMARKS.md, session 4).
    Why not by default: a worker's batch sizes depend on which tasks it happened to take, and the scan's tuned
    configuration (so the last bit of rounding) depends on the batch size, so a few pictures (4 of 3,000 measured)
    can differ by rounding between two runs; one process gives the same bytes every run.

    ``MAMBAST_WORKERS_PER_GPU``: unset or 1 → None; N → N workers; ``auto`` → 2 workers on a host with at least 8
    CPU cores, for runs of at least ``AUTO_WORKERS_MIN_JOBS`` jobs.

    Args:
        device: the ``--device`` value ("auto", "cuda", "cuda:N", "cpu", ...).
        n_jobs: planned (content, style) jobs.

    Returns:
        e.g. ``"0,0,0,0"``, or None.

    Raises:
        UsageError: the variable is neither a number nor ``auto``.
    """
    env = os.environ.get("MAMBAST_WORKERS_PER_GPU", "").strip().lower()
    if env in ("", "1"):
        return None
    if env != "auto" and not env.isdigit():
        raise UsageError(f"MAMBAST_WORKERS_PER_GPU={env!r} is neither a number nor 'auto'")
    if env == "auto" and n_jobs < AUTO_WORKERS_MIN_JOBS:
        return None
    d = device.strip().lower()
    if not (d == "auto" or d == "cuda" or d.startswith("cuda:")):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(d.split(":", 1)[1]) if d.startswith("cuda:") else torch.cuda.current_device()
    if not 0 <= index < torch.cuda.device_count():
        return None                          # let the ordinary path report the bad device
    if env == "auto":
        from mambast_cli.pipeline.run import usable_cpus

        k = 2 if usable_cpus() >= 8 else 1
    else:
        k = int(env)
    return ",".join([str(index)] * k) if k > 1 else None


def _exit_code(report: "Report") -> int:
    if report.interrupted:
        return interrupt_exit_code()
    return 0 if report.failed == 0 else 1


def _read_stdin(null_separated: bool) -> tuple[list[str], bytes | None]:
    """Read stdin: image bytes (detected by their magic number) or a list of paths.

    Returns:
        (paths, image bytes or None).
    """
    from mambast_cli.io import looks_like_image

    stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
    if sys.stdin.isatty():
        raise UsageError("INPUT '-' reads stdin, but stdin is a terminal", hint="pipe a list of paths or an image into mambast")
    data = stream.read()
    if isinstance(data, str):
        data = data.encode()
    if looks_like_image(data[:16]):
        return [], data
    if not null_separated and b"\0" in data:  # no path holds a NUL: binary, not a list of paths
        raise UsageError("stdin is not a list of paths (it holds NUL bytes) nor a picture in a format read from stdin",
                         hint="stdin pictures must be JPEG, PNG, GIF, WebP, BMP, TIFF or JPEG 2000; give other files "
                              "by name, or use -0 for NUL-separated paths")
    text = os.fsdecode(data) if data else ""
    sep = "\0" if null_separated else "\n"
    paths = [p.rstrip("\r") if not null_separated else p for p in text.split(sep)]
    return [p for p in paths if p.strip()], None


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", "-V", help="Print the version and exit.", is_eager=True)] = False,
) -> None:
    """mambast: fast arbitrary style transfer with Mamba-ST."""
    if version:
        typer.echo(f"mambast {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


@app.command()
def stylize(
    inputs: Annotated[list[str], typer.Argument(help="Files, folders (recursive), globs, or '-' for stdin.", metavar="INPUT...")],
    style: StyleOpt,
    output: Annotated[str, typer.Option("--output", "-o", help="Output folder ('-' = write the single result to stdout).")] = "stylized",
    size: SizeOpt = 512,
    max_side: MaxSideOpt = 2048,
    style_size: StyleSizeOpt = None,
    alpha: AlphaOpt = 1.0,
    preserve_color: PreserveOpt = False,
    seed: SeedOpt = 0,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.jpg,
    quality: Annotated[Optional[int], typer.Option(min=1, max=100, help="JPEG/WebP quality (default 92/90; PNG is lossless).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo outputs that already exist (default: skip them).")] = False,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Pictures per GPU batch (default: from free memory).")] = None,
    device: DeviceOpt = "auto",
    weights: WeightsOpt = None,
    precision: PrecisionOpt = Precision.auto,
    max_pixels: MaxPixelsOpt = _DEFAULT_MAX_PIXELS,
    null: Annotated[bool, typer.Option("-0", "--null", help="With INPUT '-': paths on stdin are NUL-separated.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan and list the jobs; compute nothing.")] = False,
    devices: Annotated[Optional[str], typer.Option(help="Several devices of this host, one worker each: all, GPU indices (0,1,3) or cpu,cpu.")] = None,
    ray: Annotated[Optional[str], typer.Option("--ray", help="Run on a Ray cluster at this address (auto, or ray://HOST:10001); needs the ray extra.", metavar="ADDRESS")] = None,
    ray_actors: Annotated[Optional[int], typer.Option(min=1, help="With --ray: model actors in the pool (default: one per GPU of the cluster).")] = None,
) -> None:
    """Stylize every INPUT with every --style into OUTDIR as {stem}__{style-stem}.{ext}."""
    console = _err_console()
    try:
        _stylize(console, inputs, style, output, size, max_side, style_size, alpha, preserve_color, seed, format.value,
                 quality, overwrite, batch_size, device, weights, precision.value, max_pixels, null, json_out, quiet, dry_run,
                 devices, ray, ray_actors)
    except MambastError as e:
        _fail(e, console, json_out)


def _stylize(console: "Console", inputs: list[str], style: list[str], output: str, size: int, max_side: int,
             style_size: int | None, alpha: float, preserve_color: bool, seed: int, fmt: str, quality: int | None,
             overwrite: bool, batch_size: int | None, device: str, weights: Path | None, precision: str,
             max_pixels: int, null: bool, json_out: bool, quiet: bool, dry_run: bool,
             devices: str | None = None, ray: str | None = None, ray_actors: int | None = None) -> NoReturn:
    from mambast_cli.io import probe_writable
    from mambast_cli.pipeline import RunOptions, create_engine, plan_jobs, run_plan

    if not style:
        raise UsageError("no style image given", hint="add --style STYLE.jpg")
    if inputs.count("-") > 1:
        raise UsageError("'-' (stdin) can be given only once")
    to_stdout = output == "-"
    if to_stdout and json_out:
        raise UsageError("-o - and --json both want stdout", hint="drop one of them")
    if devices is not None and device != "auto":
        raise UsageError("--device and --devices both given", hint="use --devices for several devices, --device for one")
    if ray is not None and (devices is not None or to_stdout):
        raise UsageError("--ray runs on the cluster's devices and writes to a folder",
                         hint="drop --devices / -o - (use a folder every Ray node can reach)")
    if ray_actors is not None and ray is None:
        raise UsageError("--ray-actors needs --ray ADDRESS")
    literal: list[str] = []
    stdin_image: bytes | None = None
    if "-" in inputs:
        literal, stdin_image = _read_stdin(null)
    plan = plan_jobs([i for i in inputs if i != "-"], style, None if to_stdout else output, fmt=fmt,
                     overwrite=overwrite, literal_inputs=literal, stdin_image=stdin_image)
    if dry_run:
        for ev in plan.notes:
            _Renderer(console, total=0, json_mode=json_out, quiet=quiet)(ev)
        for ci, si in plan.jobs():
            c, s, out = plan.contents[ci], plan.styles[si], plan.output_for(ci, si)
            if json_out:
                _json_line({"event": "planned", "input": c.display, "style": s.display, "output": os.fspath(out) if out else "-"})
            elif not quiet:
                console.print(f"{_disp(c.display)} × {_disp(os.path.basename(s.display))} → {_disp(os.fspath(out) if out else '-')}",
                              markup=False)
        # inputs the plan already knows to be bad (missing, a pattern that matched nothing) fail the dry run too
        failed = sum(1 for ev in plan.notes if ev.kind == "error")
        code = 0 if failed == 0 else 1
        if not quiet:
            console.print(f"dry run: {plan.n_pending} to do, {plan.n_done} already done"
                          + (f", {failed} failed" if failed else ""), markup=False)
        if json_out:
            _json_line({"event": "summary", "planned": plan.n_pending, "skipped": plan.n_done, "failed": failed,
                        "dry_run": True, "exit_code": code})
        raise typer.Exit(code)
    if not to_stdout:
        probe_writable(output)
    opts = RunOptions(size=size, max_side=max_side, style_size=style_size, alpha=alpha, preserve_color=preserve_color,
                      quality=quality, batch_size=batch_size, max_pixels=max_pixels)
    engine_kwargs: dict[str, Any] = dict(weights=os.fspath(weights) if weights else None, precision=precision, seed=seed)
    if devices is None and ray is None and not to_stdout:
        devices = auto_workers(device, plan.n_pending)
    if ray is not None or (devices is not None and not to_stdout):
        renderer = _Renderer(console, total=plan.n_pending, json_mode=json_out, quiet=quiet)
        try:
            if ray is not None:
                from mambast_cli.ray import stylize_plan

                report = stylize_plan(plan, address=ray, opts=opts, concurrency=ray_actors, on_event=renderer,
                                      **engine_kwargs)
            else:
                from mambast_cli.pipeline.multi import parse_devices, run_plan_multi

                report = run_plan_multi(plan, parse_devices(devices or ""), engine_kwargs, opts, on_event=renderer)
        except MambastError:
            renderer.close()
            raise
        renderer.summary(report)
        raise typer.Exit(_exit_code(report))
    if devices is not None:  # one picture to stdout: its first device is enough
        from mambast_cli.pipeline.multi import parse_devices

        device = parse_devices(devices)[0]
    engine: Any = None
    if plan.n_pending:
        import torch  # noqa: F401 - imported before the progress clock starts

        engine = create_engine(device=device, **engine_kwargs)
    renderer = _Renderer(console, total=plan.n_pending, json_mode=json_out, quiet=quiet)

    def sink(data: bytes) -> None:
        out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else sys.stdout
        out.write(data)
        out.flush()

    try:
        report = run_plan(plan, engine, opts, on_event=renderer, stdout_sink=sink if to_stdout else None)
    except OutputError:
        renderer.close()
        raise
    renderer.summary(report)
    raise typer.Exit(_exit_code(report))


@app.command()
def sheet(
    contents: Annotated[list[str], typer.Argument(help="Content images (rows).", metavar="CONTENT...")],
    style: StyleOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Sheet file (.png, .jpg or .webp).")] = Path("sheet.png"),
    cell: Annotated[int, typer.Option(min=32, max=2048, help="Side of each square in the sheet, in pixels.")] = 256,
    size: SizeOpt = 512,
    max_side: MaxSideOpt = 2048,
    style_size: StyleSizeOpt = None,
    alpha: AlphaOpt = 1.0,
    preserve_color: PreserveOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    weights: WeightsOpt = None,
    precision: PrecisionOpt = Precision.auto,
    max_pixels: MaxPixelsOpt = _DEFAULT_MAX_PIXELS,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Contact sheet: styles across the top, contents down the left, every result in the grid."""
    console = _err_console()
    try:
        from mambast_cli.io import encode_image, write_atomic
        from mambast_cli.pipeline import RunOptions, create_engine
        from mambast_cli.pipeline.sheet import build_sheet

        if not style:
            raise UsageError("no style image given", hint="add --style STYLE.jpg")
        fmt = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}.get(output.suffix.lower())
        if fmt is None:
            raise UsageError(f"cannot tell the sheet's format from {output.name!r}", hint="end -o with .png, .jpg or .webp")
        out_real = os.path.realpath(output)
        for src in (*contents, *style):
            if os.path.realpath(src) == out_real:
                raise UsageError(f"-o {os.fspath(output)} would overwrite the input {src}", hint="choose another -o")
        engine = create_engine(weights=os.fspath(weights) if weights else None, device=device, precision=precision.value, seed=seed)
        opts = RunOptions(size=size, max_side=max_side, style_size=style_size, alpha=alpha, preserve_color=preserve_color,
                          max_pixels=max_pixels)
        renderer = _Renderer(console, total=len(contents) * len(style), json_mode=json_out, quiet=quiet, label="sheet")
        img, report = build_sheet(contents, style, engine, opts, cell=cell, on_event=renderer)
        write_atomic(output, encode_image(img, fmt))
        if not quiet:
            console.print(f"sheet written to {_disp(os.fspath(output))}", markup=False)
        renderer.summary(report)
        raise typer.Exit(_exit_code(report))
    except MambastError as e:
        _fail(e, console, json_out)


@app.command()
def info(
    device: DeviceOpt = "auto",
    weights: WeightsOpt = None,
    precision: PrecisionOpt = Precision.auto,
    json_out: JsonOpt = False,
) -> None:
    """Versions, device, and the weights in use with their metadata."""
    import platform

    import torch

    console = _err_console()
    d: dict[str, Any] = {
        "mambast": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        d["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    error: MambastError | None = None
    try:
        from mambast_cli.pipeline import create_engine

        engine = create_engine(weights=os.fspath(weights) if weights else None, device=device, precision=precision.value)
        d["engine"] = engine.info()
    except MambastError as e:
        error = e
    if json_out:
        if error is not None:
            d["error"] = {"error": type(error).__name__, "message": str(error), "hint": error.hint}
        _json_line(d)
    else:
        _print_mapping(console, d)
    if error is not None:
        _fail(error, console)


def _print_mapping(console: "Console", d: dict[str, Any], indent: int = 0) -> None:
    for k, v in d.items():
        if isinstance(v, dict):
            console.print(" " * indent + f"{k}:", markup=False)
            _print_mapping(console, v, indent + 2)
        else:
            console.print(" " * indent + f"{k}: {v}", markup=False)


@weights_app.command("import-official")
def weights_import_official(
    emb: Annotated[Path, typer.Argument(help="Official embedding checkpoint (.pth).")],
    mamba: Annotated[Path, typer.Argument(help="Official Mamba checkpoint (.pth).")],
    dec: Annotated[Path, typer.Argument(help="Official decoder checkpoint (.pth).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .safetensors file.")],
) -> None:
    """Convert the three official Mamba-ST checkpoints into one mambast .safetensors file."""
    console = _err_console()
    try:
        from mambast_cli.model.weights import import_official, save_weights

        result = import_official(emb, mamba, dec)
        model, details = result if isinstance(result, tuple) else (result, {})
        for w in details.get("warnings", []):
            console.print(f"[yellow]warning:[/] {w}")
        save_weights(output, model, source=f"official Mamba-ST checkpoints: {emb.name}, {mamba.name}, {dec.name}",
                     extra={"official_files": details.get("files", {})})
        console.print(f"wrote {_disp(os.fspath(output))}", markup=False)
    except MambastError as e:
        _fail(e, console)


def _cache_module() -> Any:
    try:
        from mambast_cli.engine import cache
    except ImportError as e:
        raise MambastError(f"the style cache is not available in this build ({e})") from e
    return cache


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


@cache_app.command("ls")
def cache_ls(json_out: JsonOpt = False) -> None:
    """List the cached styles."""
    console = _err_console()
    try:
        entries = list(_cache_module().list_entries())
    except MambastError as e:
        _fail(e, console)
    for e in entries:
        d = e if isinstance(e, dict) else getattr(e, "__dict__", {"entry": str(e)})
        if json_out:
            _json_line({k: (os.fspath(v) if isinstance(v, Path) else v) for k, v in d.items()})
        else:  # the listing is the command's output (stdout, like `cache size`); the count is a note (stderr)
            typer.echo("  ".join(f"{k}={_human_bytes(v) if k in ('size', 'bytes') else v}" for k, v in d.items()))
    if not json_out:
        console.print(f"{len(entries)} entries", markup=False)


@cache_app.command("size")
def cache_size(json_out: JsonOpt = False) -> None:
    """Total size of the style cache."""
    console = _err_console()
    try:
        n = int(_cache_module().total_size())
    except MambastError as e:
        _fail(e, console)
    if json_out:
        _json_line({"bytes": n})
    else:
        typer.echo(_human_bytes(n))


@cache_app.command("clear")
def cache_clear() -> None:
    """Delete every cached style."""
    console = _err_console()
    try:
        freed = _cache_module().clear()
    except MambastError as e:
        _fail(e, console)
    console.print(f"cache cleared{'' if freed is None else f' ({freed})'}", markup=False)


def _unavailable(name: str, reason: str) -> Callable[[], None]:
    def command() -> None:
        console = _err_console()
        console.print(f"[red]error:[/] '{name}' is not available in this build ({reason})")
        raise typer.Exit(3)

    command.__doc__ = f"(unavailable: {reason})"
    return command


_optional_registered = False


def build_app() -> typer.Typer:
    """The app with the optional commands (train, bench) registered when their modules import.

    A missing or broken module gives a stub command that explains why and exits 3; it never breaks the rest.

    Returns:
        The Typer app.
    """
    global _optional_registered
    if not _optional_registered:
        _optional_registered = True
        for name, module, attr in (("train", "mambast_cli.train.cli", "train_command"),
                                   ("bench", "mambast_cli.pipeline.bench", "bench_command"),
                                   ("video", "mambast_cli.video.cli", "video_command")):
            try:
                import importlib

                fn = getattr(importlib.import_module(module), attr)
            except Exception as e:  # noqa: BLE001 - an optional command must never break the CLI
                reason = f"{type(e).__name__}: {e}"
                app.command(name, help=f"(unavailable: {reason})")(_unavailable(name, reason))
            else:
                app.command(name)(fn)
    return app


def main() -> None:
    """Console-script entry point: answer ``--version`` before any import, then run the app."""
    argv = sys.argv[1:]
    if argv and argv[0] in ("--version", "-V"):
        print(f"mambast {__version__}")
        raise SystemExit(0)
    stop_on_sigterm()
    build_app()(prog_name="mambast")
