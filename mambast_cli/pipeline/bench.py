"""`mambast bench`: the engine benchmark (engine/bench.py) plus the end-to-end folder row of the pipeline.

Owns: `folder_benchmark(...)` (a folder of JPEGs → stylised JPEGs through `run_plan`, the path `mambast stylize`
takes: decode threads → batches → engine → encode/write threads; returns a dict, never prints), the helpers it shares
with scripts/bench_multi.py (`make_images`, `steady_rate`), and `bench_command`, the Typer command the CLI registers
(the one place here that prints).

The folder row: N synthetic size² JPEGs (smooth random colour fields plus noise, realistic file sizes) or a folder
you give, one style, written as JPEGs into a temporary folder. A warm-up run over the first pictures (tuning, cuDNN
algorithm choice) is timed separately; then the whole folder runs and is reported as
  - wall img/s: outputs / the whole run (the engine is already loaded),
  - steady img/s: outputs between the 10th and the 95th percentile of completion times / that span (what a long run
    converges to), plus the batch sizes used.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mambast_cli.errors import MambastError, UsageError

__all__ = ["bench_command", "folder_benchmark", "format_folder", "make_images", "steady_rate"]


def make_images(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """Write n size×size JPEGs (upsampled random colour fields plus a little noise) into folder."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        rng = np.random.default_rng(seed + i)
        small = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), "RGB").resize((size, size), Image.BICUBIC)
        arr = np.asarray(small, dtype=np.int16) + rng.integers(-12, 12, (size, size, 3))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB").save(folder / f"img{i:05d}.jpg", quality=90)

    with ThreadPoolExecutor(min(16, os.cpu_count() or 4)) as pool:
        list(pool.map(one, range(n)))


def steady_rate(times: list[float]) -> float:
    """Items per second between the 10th and the 95th percentile of completion times."""
    if len(times) < 20:
        return len(times) / max(times[-1] - times[0], 1e-9) if len(times) > 1 else 0.0
    t = sorted(times)
    a, b = int(0.10 * len(t)), int(0.95 * len(t)) - 1
    return (b - a) / max(t[b] - t[a], 1e-9)


def folder_benchmark(engine: Any, *, n: int = 1000, size: int = 512, images: str | os.PathLike[str] | None = None,
                     style: str | os.PathLike[str] | None = None, quality: int = 90, warmup: int | None = None,
                     workdir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Stylise a folder of JPEGs end to end with `run_plan` and time it.

    Args:
        engine: a loaded Engine (or anything `run_plan` accepts).
        n: synthetic pictures to make (ignored when `images` is given).
        size: their side in pixels; also the processing size (`--size`) of the run.
        images: a folder of your own pictures instead (processed at `size` on the short side).
        style: the style picture (default: one synthetic picture).
        quality: JPEG quality of the outputs.
        warmup: pictures in the separate warm-up run (default: two batches, at most n).
        workdir: where the synthetic inputs and the outputs go (default: a temporary folder, removed afterwards).

    Returns:
        {"images", "size", "ok", "failed", "warmup_s", "wall_s", "wall_img_s", "steady_img_s", "batch_sizes",
         "stages_s" (the run's `Report.stages`), "errors"}.
    """
    import shutil

    from mambast_cli.pipeline import RunOptions, plan_jobs, run_plan

    if images is not None and not Path(images).is_dir():
        raise UsageError(f"{images}: not a folder", hint="--images takes a folder of pictures")
    own = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="mambast-bench-folder-"))
    try:
        if images is None:
            src = work / "in"
            make_images(src, n, size)
        else:
            src = Path(images)
        if style is None:
            make_images(work / "style", 1, size, seed=10_000)
            style = work / "style" / "img00000.jpg"
        opts = RunOptions(size=size, quality=quality)
        files = sorted(p for p in src.rglob("*") if p.is_file())
        batch = max(1, int(getattr(engine, "max_batch", lambda h, w: 1)(size, size)))
        k = min(len(files), warmup if warmup is not None else 2 * batch)
        t0 = time.perf_counter()
        if k:
            run_plan(plan_jobs([str(f) for f in files[:k]], [str(style)], work / "warmup"), engine, opts)
        warmup_s = time.perf_counter() - t0
        times: list[float] = []
        errors: list[str] = []

        def on_event(ev: Any) -> None:
            if ev.kind == "ok":
                times.append(time.perf_counter())
            elif ev.kind == "error" and len(errors) < 3:
                errors.append(ev.message if ev.input and ev.input in ev.message else f"{ev.input}: {ev.message}")

        t0 = time.perf_counter()
        report = run_plan(plan_jobs([str(src)], [str(style)], work / "out"), engine, opts, on_event=on_event)
        wall = time.perf_counter() - t0
        return {"images": len(files), "size": size, "ok": report.ok, "failed": report.failed,
                "warmup_s": round(warmup_s, 3), "wall_s": round(wall, 3), "wall_img_s": round(report.ok / wall, 2),
                "steady_img_s": round(steady_rate(times), 2), "batch_sizes": dict(report.batch_sizes),
                "stages_s": report.to_dict()["stages_s"], "errors": errors}
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def format_folder(row: dict[str, Any]) -> str:
    """One text block for a `folder_benchmark` result (with the first failures, if any)."""
    text = (f"folder end to end ({row['images']} JPEGs at {row['size']}², decode → engine → encode, one style):\n"
            f"  {row['ok']} written, {row['failed']} failed in {row['wall_s']} s: {row['wall_img_s']} img/s wall, "
            f"{row['steady_img_s']} img/s steady (warm-up run {row['warmup_s']} s; batches {row['batch_sizes']})")
    st = row.get("stages_s") or {}
    if st:
        text += "\n  stages (s): " + ", ".join(f"{k} {v}" for k, v in st.items())
    return "\n".join([text] + [f"  failed: {e}" for e in row["errors"]])


# ----------------------------------------------------------------------------------------------------------------
# the Typer command (registered by cli.py: app.command("bench")(bench_command))


def _ints(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    text = text.strip()
    if not text or text.lower() == "none":
        return ()
    return tuple(int(t) for t in text.replace("x", ",").split(",") if t.strip())


def bench_command(
    weights: Annotated[Optional[Path], typer.Option(help="Weights file; default: random weights (speed only).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    sizes: Annotated[Optional[str], typer.Option(help="Square sides for the per-size rows, e.g. 256,512,1024.")] = None,
    contents: Annotated[Optional[int], typer.Option(help="Contents per size row.")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="CONTENTSxSTYLES for the protocol row, e.g. 20x40; 0x0 skips.")] = None,
    uhd: Annotated[Optional[str], typer.Option("--large", help="HxW of the single large image, e.g. 2160x3840; 0x0 skips.")] = None,
    curve: Annotated[Optional[str], typer.Option(help="Square sides for the memory curve; 'none' skips.")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repetitions per row (median).")] = 3,
    baseline: Annotated[bool, typer.Option(help="Also run the official-equivalent path.")] = True,
    baseline_scan: Annotated[str, typer.Option(help="Baseline scan: auto (our kernels) or ref (PyTorch reference).")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="Also time torch.compile.")] = False,
    folder: Annotated[int, typer.Option(min=0, help="End-to-end row: this many synthetic JPEGs through the whole pipeline (0 skips).")] = 0,
    folder_size: Annotated[int, typer.Option(min=16, help="Side of the folder row's pictures.")] = 512,
    images: Annotated[Optional[Path], typer.Option(help="Your own pictures for the folder row instead of synthetic ones.")] = None,
    engine_rows: Annotated[bool, typer.Option(help="Run the engine rows (--no-engine-rows: the folder row only).")] = True,
    tiny: Annotated[bool, typer.Option("--tiny", help="Tiny model and sizes (CPU smoke run).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON only.")] = False,
) -> None:
    """Measure engine speed and memory against the official-equivalent inference path, and optionally a folder
    end to end (--folder N). Exit code 1 when pictures of the folder row failed."""
    try:
        _bench(weights, device, sizes, contents, protocol, uhd, curve, repeats, baseline, baseline_scan, compile,
               folder, folder_size, images, engine_rows, tiny, as_json)
    except MambastError as e:
        typer.echo(f"error: {e}" + (f"  (hint: {e.hint})" if e.hint else ""), err=True)
        raise typer.Exit(e.exit_code)


def _bench(weights: Path | None, device: str, sizes: str | None, contents: int | None, protocol: str | None,
           uhd: str | None, curve: str | None, repeats: int, baseline: bool, baseline_scan: str, compile: bool,
           folder: int, folder_size: int, images: Path | None, engine_rows: bool, tiny: bool, as_json: bool) -> None:
    from rich.console import Console

    from mambast_cli.engine.bench import benchmark, format_report

    err = Console(stderr=True)
    say = None if as_json else (lambda msg: err.print(f"[dim]… {msg}[/]"))
    result: dict[str, Any] = {}
    if engine_rows:
        prot = _ints(protocol)
        large = _ints(uhd)
        result = benchmark(
            weights=weights, device=device, tiny=tiny, sizes=_ints(sizes) or None, n_contents=contents,
            protocol=(prot if prot else (0, 0)) if protocol is not None else None,
            uhd=(large if large else (0, 0)) if uhd is not None else None,
            curve=_ints(curve), repeats=repeats, baseline=baseline, baseline_scan=baseline_scan, compile=compile,
            on_progress=say,
        )
    if folder or images is not None:
        if say:
            say(f"folder end to end: {folder if images is None else images}")
        result["folder"] = folder_benchmark(_bench_engine(weights, device, tiny), n=folder, size=folder_size,
                                            images=images)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        text = [format_report(result)] if engine_rows else []
        if "folder" in result:
            text.append(format_folder(result["folder"]))
        Console().print("\n\n".join(text), highlight=False, markup=False)
    if result.get("folder", {}).get("failed"):
        raise typer.Exit(1)


def _bench_engine(weights: Path | None, device: str, tiny: bool) -> Any:
    """The engine for the folder row: the weights given, else random weights of the full (or tiny) model."""
    import torch

    from mambast_cli.engine import Engine
    from mambast_cli.model import MambaST, MambaSTConfig, tiny_config

    if weights is not None:
        return Engine(weights=weights, device=device, disk_cache=False)
    torch.manual_seed(0)
    return Engine(model=MambaST(tiny_config() if tiny else MambaSTConfig()), device=device, disk_cache=False)
