"""`mambast train`: the Typer command function and its progress rendering.

Owns parsing the train options into a TrainConfig, rendering the loop's events (rich progress on a terminal,
plain lines otherwise; the loop only emits on rank 0) and turning MambastError into the exit code. Heavy
imports (torch, the loop) happen inside the command body so `mambast --help` stays instant.
Registered by the main CLI as `app.command("train")(train_command)`; also runnable on its own as
`python -m mambast_cli.train ...` (which is what torchrun launches).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class _Renderer:
    """Turns loop events into terminal output: a rich progress bar on a TTY, plain lines otherwise."""

    LOSS_KEYS = ("total", "content", "style", "id1", "id2", "color", "grid")

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.tty = self.console.is_terminal
        self.progress: Any = None
        self.task: Any = None

    def __call__(self, e: dict[str, Any]) -> None:
        kind = e.get("event")
        if kind == "start":
            self._line(f"training on {e['device']} x{e['world']}: {e['params']:,} params, "
                       f"{e['train_content']}+{e['train_style']} train / {e['val_content']}+{e['val_style']} held-out "
                       f"images, steps {e['step']}→{e['steps']}")
            if e.get("init_weights"):
                self._line(f"initialised from {e['init_weights']['path']} (sha256 {e['init_weights']['sha256'][:16]})")
            if self.tty:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                         TimeRemainingColumn(), TextColumn("{task.description}"),
                                         console=self.console, transient=False)
                self.progress.start()
                self.task = self.progress.add_task("", total=e["steps"], completed=e["step"])
        elif kind == "log":
            losses = " ".join(f"{k}={e[k]:.4g}" for k in self.LOSS_KEYS if k in e)
            desc = f"{e['it_s']:.2f} it/s {e['img_s']:.0f} img/s lr={e['lr']:.2e} {losses}"
            if self.progress is not None:
                self.progress.update(self.task, completed=e["step"], description=desc)
            else:
                self._line(f"step {e['step']}/{e['steps']} {desc}" + (f" mem={e['mem_gb']:.1f}GB" if "mem_gb" in e else ""))
        elif kind == "val":
            parts = [f"{name}: content={e[name]['content']:.4g} style={e[name]['style']:.4g}"
                     + (f" grid={e[name]['grid']:.3g}" if "grid" in e[name] else "")
                     for name in ("model", "identity", "content_image", "color_transfer") if name in e]
            self._line(f"val @ {e['step']}: " + " | ".join(parts))
        elif kind in ("sample", "ckpt"):
            self._line(f"{kind} @ {e['step']}: {e['path']}")
        elif kind == "resume":
            self._line(f"resumed from {e['path']} at step {e['step']}" if e["path"] else "no checkpoint: starting fresh")
        elif kind == "note":
            self._line(e["text"])
        elif kind == "export":
            self._line("exported " + ", ".join(e["files"]))
        elif kind == "interrupted":
            self.close()
            self._line(f"interrupted at step {e['step']}: " + (f"checkpoint {e['ckpt']} saved, continue with --resume"
                                                               if e["ckpt"] else "no checkpoint saved for this step"))
        elif kind == "done":
            self.close()
            self._line(f"done at step {e['step']} ({e['reason']}) in {e['elapsed_s'] / 60:.1f} min")

    def _line(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def train_command(
    content: Annotated[Path, typer.Option(help="Folder of content photos (searched recursively).")],
    style: Annotated[Path, typer.Option(help="Folder of style artworks (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: ckpt.pt, log.jsonl, samples/, model.safetensors.")],
    steps: Annotated[int, typer.Option(help="Optimiser steps in total (resume counts the steps already done).")] = 20_000,
    batch_size: Annotated[int, typer.Option(help="Images per GPU per step (the paper: 8).")] = 8,
    lr: Annotated[float, typer.Option(help="Adam learning rate (peak LR for --recipe ours).")] = 1e-4,
    recipe: Annotated[str, typer.Option(help="'ours' (Mamba init, warm-up + cosine, clipping) or 'paper' (official init, constant LR).")] = "ours",
    loss_net: Annotated[str, typer.Option(help="Loss network: effnet-lite0, effnet-lite0:PATH, effnet-lite1:PATH, vgg19=PATH.")] = "effnet-lite0",
    seed: Annotated[int, typer.Option(help="Seed for init, data order, crops, permutations.")] = 777,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/ckpt.pt if it exists.")] = False,
    time_limit: Annotated[Optional[float], typer.Option(help="Wall-clock minutes; stops early enough to checkpoint and export.")] = None,
    val_frac: Annotated[float, typer.Option(help="Fraction of each folder held out by file-name hash (never trained on).")] = 0.05,
    sample_every: Annotated[int, typer.Option(help="Steps between sample sheets in OUT/samples (0 = only at the end).")] = 500,
    val_every: Annotated[int, typer.Option(help="Steps between held-out validation (0 = only at the end).")] = 500,
    ckpt_every: Annotated[int, typer.Option(help="Steps between checkpoints (0 = only at the end).")] = 1000,
    log_every: Annotated[int, typer.Option(help="Steps between loss read-outs (each one is a host sync).")] = 25,
    export_shards: Annotated[bool, typer.Option(help="Also split the bf16 export into <=15 MiB shards in OUT/shards.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (under torchrun each rank uses cuda:LOCAL_RANK).")] = "auto",
    workers: Annotated[int, typer.Option(help="Data-loading worker processes per folder per GPU.")] = 4,
    config: Annotated[str, typer.Option(help="Model size: default (official) or tiny (tests).")] = "default",
    warmup: Annotated[Optional[int], typer.Option(help="Warm-up steps for --recipe ours (default min(500, steps/20)).")] = None,
    min_lr_frac: Annotated[float, typer.Option(help="Cosine floor as a fraction of --lr (recipe ours).")] = 0.1,
    lr_schedule: Annotated[str, typer.Option(help="Cosine decay over 'steps', or 'time': over the larger of step and wall-time progress, so a run stopped by --time-limit ends at the floor (recipe ours; needs --time-limit).")] = "steps",
    ema: Annotated[float, typer.Option(help="Keep a moving average of the weights with this decay (e.g. 0.999, ~1,000 steps) and validate, sample and export it; 0 = off.")] = 0.0,
    init_weights: Annotated[Optional[str], typer.Option(help="Start from this mambast weights file ('default' = the bundled weights) instead of a fresh init; optimiser and LR schedule start at step 0. Ignored when --resume finds a checkpoint.")] = None,
    grad_clip: Annotated[float, typer.Option(help="Gradient-norm clip for recipe ours (0 = off).")] = 1.0,
    content_weight: Annotated[float, typer.Option(help="Weight of the content loss (paper 7).")] = 7.0,
    style_weight: Annotated[float, typer.Option(help="Weight of the style loss (paper 10).")] = 10.0,
    id1_weight: Annotated[float, typer.Option(help="Weight of identity loss 1, pixel MSE (paper 70).")] = 70.0,
    id2_weight: Annotated[float, typer.Option(help="Weight of identity loss 2, feature MSE (paper 1).")] = 1.0,
    color_weight: Annotated[float, typer.Option(help="Weight of a pixel mean/std colour term (0 = off, the paper).")] = 0.0,
    grid_weight: Annotated[float, typer.Option(help="Weight of a patch-grid term: the residual's power at the 8-px patch period in the stylised and identity outputs (0 = off, the paper; MODEL.md, known limits).")] = 0.0,
    style_taps: Annotated[Optional[str], typer.Option(help="Comma-separated style taps (default effnet block0-5,7; vgg relu1_1..5_1).")] = None,
    content_taps: Annotated[Optional[str], typer.Option(help="Comma-separated content taps (default effnet block10; vgg relu4_1,relu5_1).")] = None,
    aug_multiscale: Annotated[int, typer.Option(help="Style crops from short sides up to this many px (0 = off, else e.g. 448).")] = 0,
    aug_rot90: Annotated[bool, typer.Option(help="Random 90-degree rotations of style crops.")] = False,
    aug_hue: Annotated[float, typer.Option(help="Probability of a random hue rotation of a style crop.")] = 0.0,
    aug_gray: Annotated[float, typer.Option(help="Probability of a grey-scale style crop.")] = 0.0,
    crop: Annotated[int, typer.Option(help="Training crop size in px (multiple of 8; the paper: 256).")] = 256,
    scale_max: Annotated[int, typer.Option(help="Short side is resized to a random length from --crop to --scale-max before cropping.")] = 320,
    fuse_passes: Annotated[bool, typer.Option(help="Run Ics/Icc/Iss as one 3B batch (same maths, faster).")] = True,
) -> None:
    """Train a Mamba-ST model on folders of photos and artworks (single GPU, or torchrun for several)."""
    from mambast_cli.errors import MambastError, interrupt_exit_code, stop_on_sigterm

    stop_on_sigterm()   # SIGTERM stops the run as Ctrl-C does (exit 143); also under `python -m` / torchrun
    try:
        from mambast_cli.train.data import StyleAug
        from mambast_cli.train.losses import LossConfig
        from mambast_cli.train.loop import TrainConfig, train

        def taps(s: str | None) -> tuple[str, ...] | None:
            return tuple(t.strip() for t in s.split(",") if t.strip()) if s else None

        cfg = TrainConfig(
            content=content, style=style, out=out, steps=steps, batch_size=batch_size, lr=lr, recipe=recipe,
            loss_net=loss_net, seed=seed, resume=resume, time_limit=time_limit, val_frac=val_frac,
            sample_every=sample_every, val_every=val_every, ckpt_every=ckpt_every, log_every=log_every,
            export_shards=export_shards, device=device, workers=workers, model_config=config, warmup=warmup,
            min_lr_frac=min_lr_frac, lr_schedule=lr_schedule, ema=ema, init_weights=init_weights, grad_clip=grad_clip,
            fuse_passes=fuse_passes, crop=crop, scale_max=scale_max,
            loss=LossConfig(content_taps=taps(content_taps), style_taps=taps(style_taps),
                            content_weight=content_weight, style_weight=style_weight, id1_weight=id1_weight,
                            id2_weight=id2_weight, color_weight=color_weight, grid_weight=grid_weight),
            aug=StyleAug(multiscale_max=aug_multiscale, rot90=aug_rot90, hue=aug_hue, gray=aug_gray),
        )
        renderer = _Renderer()
        try:
            train(cfg, on_event=renderer)
        finally:
            renderer.close()
    except MambastError as e:
        typer.echo(f"error: {e}" + (f"  (hint: {e.hint})" if e.hint else ""), err=True)
        raise typer.Exit(e.exit_code)
    except KeyboardInterrupt:
        raise typer.Exit(interrupt_exit_code())
