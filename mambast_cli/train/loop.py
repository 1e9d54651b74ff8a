"""The Mamba-ST training loop: `train(config) -> Path` (spec §5, with our improvements one flag away).

Owns the optimisation: model construction and init, the three forward passes (Ics, Icc, Iss), the optimiser and LR
schedule, bf16 autocast, multi-GPU (torchrun) gradient averaging, validation, sample sheets, resumable
checkpoints, the final bf16 export (and optional ≤15 MiB shards) and RUN_DIR/log.jsonl.
Does not print: progress goes to an `on_event(dict)` callback that the CLI renders (only rank 0 emits).

Recipes:
- ``paper``: the official init (xavier overwrite, spec §4.2), Adam lr 1e-4, constant LR, no clipping.
- ``ours`` (default): Mamba inits (`reset_parameters(official=False)`), linear warm-up then cosine decay to
  `min_lr_frac`·lr, gradient clipping at `grad_clip`.
Both: batch 8 per GPU at 256², DropPath 0.1 in the decoder (model.train()), fresh permutations for each pass.

Fine-tuning: `init_weights` starts the run from a mambast weights file (or "default", the bundled one) instead of a
fresh init; optimiser, step counter and LR schedule still start at step 0, and a resumed checkpoint wins over it.
LR schedule "time" (recipe ours, needs `time_limit`): the cosine decay follows the larger of step progress and
wall-time progress, so a run that its time limit stops still ends its decay at the floor (see `time_progress`).

Multi-GPU: launched by torchrun (RANK / WORLD_SIZE / LOCAL_RANK). Parameters are broadcast from rank 0 once; after
each backward the gradients are averaged with one flat all-reduce (robust to the model's dead parameters and to
the three forward passes; the cost is one 108 MB all-reduce per step). Each rank draws its own data shard and
its own permutations/DropPath masks. Only rank 0 validates, writes samples, checkpoints, logs and exports.

Weight averaging (`ema` > 0): an fp32 exponential moving average of the weights is kept beside them (rank 0), and
validation, sample sheets and every export use it; validation also reports the raw weights' losses ("raw"). Why:
session 7's parameter average of two fine-tunes was better on both held-out losses than either run's start
(MODEL.md), and an average over one run's recent steps is the same idea without a second run.

Host syncs happen only every `log_every` steps (loss read-out + the stop decision), at validation and at
checkpoints.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from mambast_cli.errors import DeviceError, OutputError, UsageError, WeightsError
from mambast_cli.model import MambaST, MambaSTConfig, StyleBlockTensors, StyleState, tiny_config
from mambast_cli.train.artifacts import artifact_scores
from mambast_cli.train.data import CropDataset, StyleAug, center_crop_tensor, infinite_loader, list_images, split_holdout
from mambast_cli.train.losses import LossConfig, StyleLosses, color_transfer
from mambast_cli.train.lossnet import FrozenFeatures, load_loss_net

Event = dict[str, Any]
OnEvent = Callable[[Event], None]


@dataclass
class TrainConfig:
    """Everything one training run needs; stored in every checkpoint and in log.jsonl's first line.

    Attributes (the non-obvious ones):
        recipe: "ours" or "paper" (see the module docstring).
        model_config: "default" (official sizes) or "tiny" (CPU tests).
        time_limit: minutes of wall time; the run stops early enough to checkpoint and export (None = no limit).
        warmup: warm-up steps for "ours" (None: min(500, steps // 20)).
        fuse_passes: run the three passes as one batch of 3B (each pass still gets its own permutations).
        log_every: steps between host syncs (loss read-out, stop decision).
        val_pairs: how many held-out (content, style) pairs validation uses (sample sheets use the first 4).
        init_weights: a mambast weights file (or "default": the bundled one) to start from instead of a fresh init;
            ignored when `resume` finds a checkpoint.
        lr_schedule: "steps" (cosine decay over `steps`) or "time" (decay over the larger of step progress and
            wall-time progress against `time_limit`; recipe ours only).
        ema: decay of the moving average of the weights (0 = off; e.g. 0.999 averages over ~1,000 steps); when on,
            validation, samples and exports use the averaged weights (`WeightEMA`).
    """

    content: Path
    style: Path
    out: Path
    steps: int = 20_000
    batch_size: int = 8
    lr: float = 1e-4
    recipe: str = "ours"
    loss_net: str = "effnet-lite0"
    seed: int = 777
    resume: bool = False
    time_limit: float | None = None
    val_frac: float = 0.05
    sample_every: int = 500
    val_every: int = 500
    ckpt_every: int = 1000
    log_every: int = 25
    export_shards: bool = False
    device: str = "auto"
    workers: int = 4
    model_config: str = "default"
    crop: int = 256
    scale_max: int = 320
    warmup: int | None = None
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0
    amp: bool = True
    fuse_passes: bool = True
    channels_last: bool = False
    val_pairs: int = 32
    init_weights: str | None = None
    lr_schedule: str = "steps"
    ema: float = 0.0
    loss: LossConfig = field(default_factory=LossConfig)
    aug: StyleAug = field(default_factory=StyleAug)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        d = asdict(self)
        for k in ("content", "style", "out"):
            d[k] = str(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict` (unknown keys are ignored)."""
        d = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        for k in ("content", "style", "out"):
            d[k] = Path(d[k])
        d["loss"] = LossConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.get("loss", {}).items()})
        d["aug"] = StyleAug(**d.get("aug", {}))
        return cls(**d)


# ------------------------------------------------------------------------------------------------------------------
# small helpers


@dataclass
class Dist:
    """This process's place in a torchrun job (world 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_dist(device: str) -> tuple[Dist, torch.device]:
    """Read torchrun's env, init the process group if world > 1, and pick this rank's device.

    Args:
        device: "auto", "cpu", "cuda" or "cuda:N" (with torchrun, cuda means cuda:LOCAL_RANK).
    Returns:
        (Dist, torch.device).
    """
    d = Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))
    want = device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was requested but no CUDA device is visible", hint="use --device cpu")
        dev = torch.device(f"cuda:{d.local_rank}") if (want == "cuda" or d.world > 1) else torch.device(want)
        torch.cuda.set_device(dev)
    else:
        try:
            dev = torch.device(want)
        except RuntimeError as e:
            raise UsageError(f"unknown --device {device!r}", hint="use auto, cpu, cuda or cuda:N") from e
    if d.world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return d, dev


def build_model(name: str) -> MambaST:
    """A fresh MambaST of a named config ("default" or "tiny")."""
    if name == "tiny":
        return MambaST(tiny_config())
    if name == "default":
        return MambaST(MambaSTConfig())
    raise UsageError(f"unknown model config {name!r}; use default or tiny")


def check_options(cfg: TrainConfig) -> None:
    """Refuse bad option values and combinations (UsageError) before anything is created or loaded."""
    if cfg.recipe not in ("ours", "paper"):
        raise UsageError(f"unknown recipe {cfg.recipe!r}; use ours or paper")
    if cfg.lr_schedule not in ("steps", "time"):
        raise UsageError(f"unknown LR schedule {cfg.lr_schedule!r}; use steps or time")
    if cfg.lr_schedule == "time":
        if not cfg.time_limit:
            raise UsageError("--lr-schedule time needs --time-limit (the decay is planned over the time limit)")
        if cfg.recipe != "ours":
            raise UsageError("--lr-schedule time applies to --recipe ours only (recipe paper keeps a constant LR)")
    if not 0.0 <= cfg.ema < 1.0:
        raise UsageError(f"--ema must be in [0, 1) (0 = off), got {cfg.ema}")
    for name, value, low in (("--steps", cfg.steps, 0), ("--batch-size", cfg.batch_size, 1),
                             ("--log-every", cfg.log_every, 1), ("--workers", cfg.workers, 0),
                             ("--crop", cfg.crop, 8)):
        if value < low:
            raise UsageError(f"{name} must be at least {low}, got {value}")
    if not cfg.lr > 0:
        raise UsageError(f"--lr must be > 0, got {cfg.lr}")
    if not 0.0 <= cfg.val_frac < 1.0:
        raise UsageError(f"--val-frac must be in [0, 1) (0 = no validation), got {cfg.val_frac}")
    if cfg.time_limit is not None and cfg.time_limit < 0:
        raise UsageError(f"--time-limit must be >= 0 minutes, got {cfg.time_limit}")
    if cfg.warmup is not None and cfg.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {cfg.warmup}")


def warmup_steps(cfg: TrainConfig) -> int:
    """Warm-up steps of recipe "ours": `cfg.warmup`, or min(500, steps // 20) when unset."""
    return cfg.warmup if cfg.warmup is not None else min(500, cfg.steps // 20)


def time_progress(elapsed_s: float, budget_s: float, start: float = 0.0) -> float:
    """Wall-time progress of the cosine decay (LR schedule "time"), in [0, 1].

    Args:
        elapsed_s: seconds this run has been going (the loop passes the time at the end of the coming log window).
        budget_s: seconds the decay is planned over: the time limit less the loop's reserve for the final checkpoint
            and export, so that progress reaches 1 when the time limit stops the loop (≤ 0: already done).
        start: the decay progress a resumed run had reached; the rest of the decay is spread over this budget.
    Returns:
        start + (1 - start) · elapsed_s / budget_s, capped at 1.
    """
    if budget_s <= 0:
        return 1.0
    return min(1.0, start + (1.0 - start) * max(0.0, elapsed_s) / budget_s)


def decay_progress(step: int, cfg: TrainConfig, t_progress: float = 0.0) -> float:
    """How far the cosine decay of recipe "ours" has gone at a step (0-based), in [0, 1].

    Step progress (step - warm-up) / (steps - warm-up), or `t_progress` (from `time_progress`) when that is larger.
    Warm-up is always step-based; `t_progress` is 0 under LR schedule "steps".
    """
    warm = warmup_steps(cfg)
    return min(1.0, max(0.0, (step - warm) / max(1, cfg.steps - warm), t_progress))


def lr_at(step: int, cfg: TrainConfig, t_progress: float = 0.0) -> float:
    """Learning rate for a step (0-based): constant for "paper", warm-up + cosine for "ours".

    Args:
        step: the optimiser step about to run. cfg: lr, steps, warmup, min_lr_frac, recipe.
        t_progress: wall-time progress of the decay (`time_progress`; LR schedule "time"), 0 for "steps".
    """
    if cfg.recipe == "paper":
        return cfg.lr
    warm = warmup_steps(cfg)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = decay_progress(step, cfg, t_progress)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def resolve_init_weights(spec: str) -> Path:
    """The file an `--init-weights` value names: "default" is the bundled weights file (as `mambast stylize` loads)."""
    from mambast_cli.model.weights import default_weights_path

    if spec == "default":
        path = default_weights_path()
        if path is None:
            raise WeightsError("--init-weights default: no trained weights are bundled with this build",
                               hint="pass a weights file: --init-weights PATH")
        return path
    return Path(spec).expanduser()


def load_init_weights(model: MambaST, spec: str) -> dict[str, str]:
    """Overwrite `model`'s parameters (in place, in its dtype) with those of a mambast weights file.

    Uses `load_model`, so the format and sha256 checks and the refill of the keys a file may leave out apply; bf16
    weights are widened. Every rank of a torchrun job loads the same file, hence the same values.

    Args:
        model: a freshly built model (its config must match the file's, DropPath rate aside).
        spec: a path, or "default" (`resolve_init_weights`).
    Returns:
        {"path": absolute path, "sha256": the file's verified tensor hash}.
    Raises:
        WeightsError: missing, unreadable, corrupt or not a mambast weights file, or made for another model config.
    """
    from mambast_cli.model.weights import load_model, weights_id

    path = resolve_init_weights(spec)
    try:
        src = load_model(path)
    except WeightsError as e:
        raise WeightsError(f"--init-weights {e}", hint=e.hint) from e
    want, got = model.cfg.to_dict(), src.cfg.to_dict()
    diff = [f"{k} {got[k]}≠{want[k]}" for k in want if k != "drop_path" and got.get(k) != want[k]]
    if diff:
        raise WeightsError(f"--init-weights {path}: made for another model config ({', '.join(diff[:3])})",
                           hint="pick the matching --config (default or tiny)")
    model.load_state_dict(src.state_dict(), strict=True)
    return {"path": str(path.resolve()), "sha256": weights_id(path)}


def _seed_for(*parts: int) -> int:
    h = 0
    for p in parts:
        h = (h * 1_000_003 + int(p) + 0x9E37) & 0x7FFF_FFFF_FFFF_FFFF
    return h


def three_passes(model: MambaST, c: torch.Tensor, s: torch.Tensor, gens: list[torch.Generator],
                 fuse: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ics = model(c, s), Icc = model(c, c), Iss = model(s, s), each pass with its own permutation generator.

    With `fuse`, the encoders and the decoder run once on a 3B batch (faster); the style tokens of each pass are
    still shuffled with that pass's generator, so the result equals the three separate calls.

    Args:
        model: the network (train or eval mode). c, s: (B, 3, S, S) with S a multiple of the patch size.
        gens: three CPU generators.
    Returns:
        (Ics, Icc, Iss), each (B, 3, S, S), unclamped.
    """
    if not fuse:
        return model(c, s, generator=gens[0]), model(c, c, generator=gens[1]), model(s, s, generator=gens[2])
    B = c.shape[0]
    cs = model.encode_content(torch.cat([c, c, s]))
    e = model.embedding(torch.cat([s, c, s]))                        # (3B, h, w, C); crops are multiples of 8
    sgrid = (e.shape[1], e.shape[2])
    memory = model.mamba.encoder_s(e).flatten(1, 2)                  # (3B, L, C)
    parts = [model.prepare_style(memory[k * B:(k + 1) * B], sgrid, cs.grid, generator=gens[k]) for k in range(3)]
    blocks = [StyleBlockTensors(torch.cat([p.blocks[i].u for p in parts]),
                                torch.cat([p.blocks[i].delta for p in parts]),
                                torch.cat([p.blocks[i].B for p in parts])) for i in range(len(parts[0].blocks))]
    ss = StyleState(memory, sgrid, cs.grid, None, parts[0].indices, blocks)
    out = model.decode(cs, ss)
    return out[:B], out[B:2 * B], out[2 * B:]


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _save_png(img: torch.Tensor, path: Path) -> None:
    """(3, H, W) in [0, 1] → PNG, atomically."""
    from PIL import Image

    a = (img.detach().float().clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).cpu().numpy()
    tmp = path.with_name(f".{path.name}.part")
    Image.fromarray(a).save(tmp, format="PNG")
    os.replace(tmp, path)


def sample_sheet(contents: torch.Tensor, styles: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Rows of content | style | output with 4 px white gaps. All (N, 3, S, S). Returns (3, H, W)."""
    pad = 4
    rows = []
    for c, s, o in zip(contents, styles, outputs):
        gap = torch.ones(3, c.shape[1], pad, device=c.device)
        rows.append(torch.cat([c, gap, s, gap, o.float().clamp(0, 1)], dim=2))
        rows.append(torch.ones(3, pad, rows[-1].shape[2], device=c.device))
    return torch.cat(rows[:-1], dim=1)


class Validator:
    """Held-out losses of the model and of two baselines (the content itself, colour transfer), plus sheets.

    Args:
        contents, styles: held-out files; pair i is (contents[i % nc], styles[i % ns]) for i < n_pairs.
        losses: the StyleLosses (its loss network is shared with training).
        device: where to compute. size: centre-crop size.
    """

    def __init__(self, contents: list[Path], styles: list[Path], losses: StyleLosses, device: torch.device,
                 size: int = 256, n_pairs: int = 32) -> None:
        n = min(n_pairs, max(len(contents), len(styles))) if contents and styles else 0
        self.c = torch.stack([center_crop_tensor(contents[i % len(contents)], size) for i in range(n)]) if n else None
        self.s = torch.stack([center_crop_tensor(styles[i % len(styles)], size) for i in range(n)]) if n else None
        self.losses, self.device = losses, device
        self.baselines: dict[str, float] | None = None

    @property
    def empty(self) -> bool:
        return self.c is None

    @torch.no_grad()
    def _score(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], bs: int = 8) -> dict[str, float]:
        assert self.c is not None and self.s is not None
        tot: dict[str, float] = {}
        n = self.c.shape[0]
        for i in range(0, n, bs):
            c = self.c[i:i + bs].to(self.device)
            s = self.s[i:i + bs].to(self.device)
            out = fn(c, s).float()
            r = {**self.losses.content_style(out, c, s),
                 "grid": artifact_scores(out.clamp(0, 1), c.float())["grid_ratio"]}
            for k, v in r.items():
                tot[k] = tot.get(k, 0.0) + float(v) * c.shape[0] / n
        w = self.losses.cfg
        tot["weighted"] = w.content_weight * tot["content"] + w.style_weight * tot["style"]
        return tot

    def run(self, model: MambaST, amp: bool) -> dict[str, Any]:
        """Validation losses: {"model": {...}, "identity": {...}, "content_image": {...}, "color_transfer": {...}}.

        "identity" is the model given each content as its own style: its content loss is the floor of what the
        weights can reconstruct (MODEL.md, session 4: 0.211 for the bundled model, against 0.311 stylised and 0.149
        for colour transfer), the part of the content loss that more content weight cannot remove."""
        was = model.training
        model.eval()
        ac = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and self.device.type == "cuda")
        with ac:
            res: dict[str, Any] = {"model": self._score(lambda c, s: model(c, s, seed=0)),
                                   "identity": self._score(lambda c, s: model(c, c, seed=0))}
            if self.baselines is None:
                self.baselines = {"content_image": self._score(lambda c, s: c),
                                  "color_transfer": self._score(color_transfer)}
        model.train(was)
        res.update(self.baselines)
        return res

    @torch.no_grad()
    def sheet(self, model: MambaST, path: Path, amp: bool, n: int = 4) -> None:
        """Write a PNG of content | style | output for the first n held-out pairs."""
        assert self.c is not None and self.s is not None
        was = model.training
        model.eval()
        c, s = self.c[:n].to(self.device), self.s[:n].to(self.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and self.device.type == "cuda"):
            out = model(c, s, seed=0)
        model.train(was)
        _save_png(sample_sheet(c, s, out), path)


class WeightEMA:
    """An exponential moving average of a model's floating-point weights and buffers, kept in fp32.

    After each optimiser step, ``update`` moves the average towards the weights by 1 − rate, where the rate is
    min(decay, (1 + n) / (10 + n)) after n updates, so early on the average follows the weights closely instead of
    being dominated by where the run started. ``applied`` swaps the average into the model for a while (validation,
    samples, export) and puts the weights back.

    Example:
        >>> ema = WeightEMA(model, 0.999)         # doctest: +SKIP
        >>> opt.step(); ema.update(model)
        >>> with ema.applied(model): export(model)
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def rate(self) -> float:
        """The decay used by the next update."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards the model's current weights."""
        w = 1.0 - self.rate()
        self.updates += 1
        sd = model.state_dict()
        keys = list(self.shadow)
        torch._foreach_lerp_([self.shadow[k] for k in keys], [sd[k].detach().float() for k in keys], w)

    @contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The model with the averaged weights inside the block; its own weights are restored on exit."""
        sd = model.state_dict()
        backup = {k: sd[k].detach().clone() for k in self.shadow}
        with torch.no_grad():
            for k, v in self.shadow.items():
                sd[k].copy_(v)
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, v in backup.items():
                    sd[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        """For the checkpoint (tensors and plain values only: `torch.load(weights_only=True)` reads it)."""
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        """Restore `state_dict`'s values (tensors moved to where this average lives)."""
        self.updates = int(st["updates"])
        for k, v in st["shadow"].items():
            if k in self.shadow:
                self.shadow[k].copy_(v)


@contextmanager
def _averaged(ema: WeightEMA | None, model: MambaST) -> Iterator[MambaST]:
    """`ema.applied(model)`, or the model as it is when there is no average."""
    if ema is None:
        yield model
    else:
        with ema.applied(model) as m:
            yield m  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------------------------
# the loop


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # numpy's key array travels as a tensor so that the checkpoint loads with torch.load(weights_only=True)
    st: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                          "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


def _average_grads(params: list[torch.nn.Parameter], world: int) -> None:
    """One flat all-reduce of every existing gradient, divided by the world size."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat.div_(world)
    off = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[off:off + n].view_as(g))
        off += n


def export_weights(model: MambaST, cfg: TrainConfig, step: int, val: dict[str, Any] | None,
                   init: dict[str, str] | None = None) -> list[Path]:
    """Write RUN_DIR/model.safetensors in bf16, without the unused parameters (and RUN_DIR/shards/ when asked).
    Returns the files written.

    `init` ({"path", "sha256"} of the weights the run started from, or None) goes into the metadata's extra."""
    from mambast_cli.model.weights import save_weights
    from mambast_cli.train.shards import split_weights

    path = cfg.out / "model.safetensors"
    extra = {"train_step": step, "recipe": cfg.recipe, "lr_schedule": cfg.lr_schedule, "loss_net": cfg.loss_net,
             "loss": cfg.loss.to_dict(), "init_weights": init, "val": val or {},
             **({"ema_decay": cfg.ema} if cfg.ema > 0 else {})}
    # the parameters the forward never reads are left out (load_model fills them back), as in the bundled file
    save_weights(path, model, source=f"mambast train ({cfg.recipe}, {step} steps)", extra=extra, dtype=torch.bfloat16,
                 drop_unused=True)
    files = [path]
    if cfg.export_shards:
        files += split_weights(path, cfg.out / "shards")
    return files


def train(cfg: TrainConfig, on_event: OnEvent | None = None, loss_net: FrozenFeatures | None = None) -> Path:
    """Train (or resume) a Mamba-ST model and export it.

    Args:
        cfg: the run's configuration.
        on_event: called on rank 0 with dicts: {"event": "start"|"log"|"val"|"sample"|"ckpt"|"export"|"done", ...};
            also "resume" and "note" (e.g. init weights ignored because a checkpoint was resumed).
        loss_net: a ready loss network (tests pass a small one); default: `load_loss_net(cfg.loss_net)`.
    Returns:
        The exported RUN_DIR/model.safetensors (on every rank).
    """
    check_options(cfg)
    dist, dev = setup_dist(cfg.device)
    emit = (on_event or (lambda e: None)) if dist.main else (lambda e: None)
    t_start = time.time()
    out = Path(cfg.out)
    ckpt_path = out / "ckpt.pt"
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = cfg.amp and dev.type == "cuda"

    # data -----------------------------------------------------------------------------------------------------
    c_train, c_val = split_holdout(list_images(cfg.content), cfg.val_frac)
    s_train, s_val = split_holdout(list_images(cfg.style), cfg.val_frac)
    if not c_train or not s_train:
        raise UsageError("nothing left to train on after the hold-out split", hint="lower --val-frac")

    # model, losses, optimiser --------------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model_config)
    resuming = cfg.resume and ckpt_path.is_file()
    # a fresh run never overwrites an earlier run's checkpoint or exported weights
    done_before = [p.name for p in (ckpt_path, out / "model.safetensors") if p.exists()] if not resuming else []
    if done_before:
        raise OutputError(f"{out} already holds a run ({', '.join(done_before)}); refusing to overwrite it",
                          hint="continue it with --resume, or pick another --out" if "ckpt.pt" in done_before
                          else "pick another --out, or move the old weights away")
    init: dict[str, str] | None = None          # {"path", "sha256"} of the weights the run started from
    if cfg.init_weights and not resuming:
        init = load_init_weights(model, cfg.init_weights)
    else:
        model.reset_parameters(official=cfg.recipe == "paper")
    model.to(dev)
    if cfg.channels_last:
        model.cnn.to(memory_format=torch.channels_last)
    net = loss_net if loss_net is not None else load_loss_net(cfg.loss_net)
    losses = StyleLosses(net.to(dev), cfg.loss)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, fused=dev.type == "cuda")
    step = 0
    start_progress = 0.0                        # decay progress at the start of this run (see time_progress)
    if resuming:
        try:
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # tensors and plain containers only
            if not isinstance(ck, dict) or not {"model", "opt", "step"} <= ck.keys():
                raise ValueError("not a mambast training checkpoint")
        except Exception as e:  # torch raises several unrelated types for truncated or foreign files
            raise WeightsError(f"--resume: {ckpt_path} is not a readable training checkpoint (truncated or corrupt: "
                               f"{type(e).__name__})",
                               hint="it is left as it is; move it away to start fresh") from e
        want, got = model.cfg.to_dict(), ck.get("model_config") or {}
        diff = [f"{k} {got.get(k)}≠{want[k]}" for k in want if k != "drop_path" and got.get(k) != want[k]]
        if diff:
            raise WeightsError(f"--resume: {ckpt_path} is a run of another model config ({', '.join(diff[:3])})",
                               hint="pick the matching --config (default or tiny), or another --out")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = int(ck["step"])
        init = ck.get("init_weights")
        start_progress = float(ck.get("lr_progress", decay_progress(step, cfg)))
        if dist.world == 1 and "rng" in ck:
            _set_rng_state(ck["rng"])
        emit({"event": "resume", "step": step, "path": str(ckpt_path)})
        if cfg.init_weights:
            emit({"event": "note", "text": f"--init-weights {cfg.init_weights} ignored: resumed from {ckpt_path}"})
    elif cfg.resume:
        emit({"event": "resume", "step": 0, "path": None})
    if dist.world > 1:
        for p in model.state_dict().values():
            torch.distributed.broadcast(p, 0)
    if not (cfg.resume and dist.world == 1 and step > 0):
        torch.manual_seed(_seed_for(cfg.seed, dist.rank, step))  # DropPath masks differ per rank
    model.train()
    ema = WeightEMA(model, cfg.ema) if cfg.ema > 0 and dist.main else None
    if ema is not None and resuming and "ema" in ck:
        ema.load_state_dict(ck["ema"])

    aug_s = cfg.aug
    start = step * cfg.batch_size
    c_ds = CropDataset(c_train, cfg.crop, cfg.scale_max, flip=True, seed=_seed_for(cfg.seed, 1))
    s_ds = CropDataset(s_train, cfg.crop, cfg.scale_max, flip=True, aug=aug_s, seed=_seed_for(cfg.seed, 2))
    pin = dev.type == "cuda"
    c_it = infinite_loader(c_ds, cfg.batch_size, _seed_for(cfg.seed, 3), dist.rank, dist.world, cfg.workers, start, pin)
    s_it = infinite_loader(s_ds, cfg.batch_size, _seed_for(cfg.seed, 4), dist.rank, dist.world, cfg.workers, start, pin)
    validator = Validator(c_val, s_val, losses, dev, cfg.crop, cfg.val_pairs) if dist.main else None

    # the run folder is created only now that the inputs, the init weights and any checkpoint have been read, so a
    # bad option leaves nothing behind
    if dist.main:
        try:
            (out / "samples").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create run folder {out}: {e}") from e
    log_f = open(out / "log.jsonl", "a", encoding="utf-8") if dist.main else None

    def log(rec: dict[str, Any]) -> None:
        if log_f is not None:
            log_f.write(json.dumps(rec) + "\n")
            log_f.flush()

    n_params = sum(p.numel() for p in params)
    start_info = {"event": "start", "step": step, "steps": cfg.steps, "world": dist.world, "device": str(dev),
                  "params": n_params, "train_content": len(c_train), "train_style": len(s_train),
                  "val_content": len(c_val), "val_style": len(s_val), "config": cfg.to_dict(),
                  "loss": losses.cfg.to_dict(), "init_weights": init, "time": time.time()}
    log(start_info)
    emit(start_info)

    def save_ckpt() -> None:
        if not dist.main:
            return
        _atomic_torch_save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "rng": _rng_state(),
                            "config": cfg.to_dict(), "model_config": model.cfg.to_dict(), "init_weights": init,
                            "lr_progress": decay_progress(step, cfg, t_progress),
                            **({"ema": ema.state_dict()} if ema is not None else {})}, ckpt_path)
        emit({"event": "ckpt", "step": step, "path": str(ckpt_path)})
        if cfg.export_shards:  # a small bf16 copy at every checkpoint, so a lost machine never loses the run
            with _averaged(ema, model) as m:
                export_weights(m, cfg, step, None, init)

    def validate() -> dict[str, Any] | None:
        if validator is None or validator.empty:
            return None
        raw = validator.run(model, amp) if ema is not None else None
        with _averaged(ema, model) as m:
            r = validator.run(m, amp)
        rec = {"event": "val", "step": step, **r}
        if raw is not None:          # the averaged weights above; the weights being trained here
            rec["raw"] = {"model": raw["model"], "identity": raw["identity"]}
        log(rec)
        emit(rec)
        return r

    # time limit: stop when the next log window plus the final checkpoint/export might not fit
    limit_s = cfg.time_limit * 60 if cfg.time_limit else None
    reserve_s = 60.0 + (0.02 * limit_s if limit_s else 0.0)
    # LR schedule "time": wall-time progress of the decay, updated at each log point from the slowest rank's clock
    # (so every rank uses the same LR) and planned to reach 1 where the time limit stops the loop
    use_time = cfg.lr_schedule == "time" and limit_s is not None
    budget_s = (limit_s or 0.0) - reserve_s
    t_progress = time_progress(0.0, budget_s, start_progress) if use_time else 0.0
    acc: dict[str, torch.Tensor] = {}
    t_win, n_win = time.time(), 0
    last_val: dict[str, Any] | None = None
    stop = False
    updating = False             # True while opt.step/ema/step += 1 run: weights and step may disagree then
    try:
        while step < cfg.steps and not stop:
            c = next(c_it).to(dev, non_blocking=True)
            s = next(s_it).to(dev, non_blocking=True)
            lr = lr_at(step, cfg, t_progress)
            for gparam in opt.param_groups:
                gparam["lr"] = lr
            gens = [torch.Generator().manual_seed(_seed_for(cfg.seed, dist.rank, step, k)) for k in range(3)]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                ics, icc, iss = three_passes(model, c, s, gens, cfg.fuse_passes)
                terms = losses(ics, icc, iss, c, s)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            if dist.world > 1:
                _average_grads(params, dist.world)
            clip = cfg.grad_clip if (cfg.recipe == "ours" and cfg.grad_clip > 0) else float("inf")
            gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
            updating = True
            opt.step()
            if ema is not None:
                ema.update(model)
            step += 1
            updating = False
            n_win += 1
            for k, v in terms.items():
                acc[k] = acc.get(k, 0) + v.detach().float()
            acc["grad_norm"] = acc.get("grad_norm", 0) + gnorm.detach().float()

            if step % cfg.log_every == 0 or step == cfg.steps:
                keys = sorted(acc)
                # the mean losses, then two control slots reduced with MAX: [stop?, seconds at the end of the next window]
                vec = torch.stack([acc[k] for k in keys] + [torch.zeros((), device=dev)] * 2) / n_win
                if limit_s is not None:
                    per_step = (time.time() - t_win) / n_win
                    ahead_s = time.time() - t_start + per_step * cfg.log_every
                    vec[-2] = float(ahead_s + reserve_s > limit_s)
                    vec[-1] = ahead_s
                if dist.world > 1:
                    ctrl = vec[-2:].clone()
                    torch.distributed.all_reduce(vec)
                    torch.distributed.all_reduce(ctrl, op=torch.distributed.ReduceOp.MAX)
                    vec = vec / dist.world
                    vec[-2:] = ctrl
                vals = vec.tolist()
                stop = vals[-2] > 0
                if use_time:
                    t_progress = time_progress(vals[-1], budget_s, start_progress)
                dt = time.time() - t_win
                rec = {"event": "log", "step": step, "steps": cfg.steps, "lr": lr, "it_s": n_win / dt,
                       "img_s": n_win * cfg.batch_size * dist.world / dt, "elapsed_s": time.time() - t_start,
                       **{k: v for k, v in zip(keys, vals[:-2])}}
                if dev.type == "cuda":
                    rec["mem_gb"] = torch.cuda.max_memory_allocated(dev) / 2**30
                log(rec)
                emit(rec)
                acc, t_win, n_win = {}, time.time(), 0
                if not math.isfinite(rec["total"]):
                    raise UsageError(f"training diverged at step {step} (loss {rec['total']})",
                                     hint="lower --lr or resume from the last checkpoint")
            if dist.main and validator is not None and not validator.empty:
                if cfg.sample_every > 0 and step % cfg.sample_every == 0:
                    p = out / "samples" / f"step_{step:07d}.png"
                    with _averaged(ema, model) as m:
                        validator.sheet(m, p, amp)
                    emit({"event": "sample", "step": step, "path": str(p)})
                if cfg.val_every > 0 and step % cfg.val_every == 0:
                    last_val = validate()
            if cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0:
                save_ckpt()
    except KeyboardInterrupt:    # Ctrl-C, or SIGTERM (stop_on_sigterm): keep the steps done so far
        saved = None
        if dist.main and dist.world == 1 and not updating and step > 0:
            save_ckpt()
            saved = str(ckpt_path)
        rec = {"event": "interrupted", "step": step, "ckpt": saved, "elapsed_s": time.time() - t_start}
        log(rec)
        emit(rec)
        if log_f is not None:
            log_f.close()
        raise

    # finish ---------------------------------------------------------------------------------------------------
    reason = "steps" if step >= cfg.steps else "time limit"
    if dist.main:
        if validator is not None and not validator.empty:
            if cfg.val_every <= 0 or step % cfg.val_every != 0:
                last_val = validate()
            p = out / "samples" / f"step_{step:07d}.png"
            if not p.exists():
                with _averaged(ema, model) as m:
                    validator.sheet(m, p, amp)
                emit({"event": "sample", "step": step, "path": str(p)})
        if cfg.ckpt_every <= 0 or step % cfg.ckpt_every != 0:
            save_ckpt()
        with _averaged(ema, model) as m:
            files = export_weights(m, cfg, step, last_val, init)
        emit({"event": "export", "step": step, "files": [str(f) for f in files]})
        rec = {"event": "done", "step": step, "reason": reason, "elapsed_s": time.time() - t_start}
        log(rec)
        emit(rec)
    if log_f is not None:
        log_f.close()
    if dist.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return out / "model.safetensors"
