"""Training loop (tiny config, CPU): loss goes down, resume continues, export and shards round-trip."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mambast_cli.model import MambaST, MambaSTConfig, tiny_config
from mambast_cli.errors import UsageError, WeightsError
from mambast_cli.model.weights import load_model, load_weights, save_weights, weights_id
from mambast_cli.train.loop import TrainConfig, check_options, lr_at, three_passes, time_progress, train
from mambast_cli.train.losses import LossConfig, StyleLosses

# shallow taps keep the loss network cheap on CPU (the real defaults go to block10)
FAST_LOSS = LossConfig(content_taps=("block4",), style_taps=("block0", "block2"))
from mambast_cli.train.lossnet import EfficientNetLite
from mambast_cli.train.shards import join_shards, split_weights


def tiny_loss_net() -> EfficientNetLite:
    """Random-weight Lite0 (same code path as the real one, no package needed)."""
    torch.manual_seed(0)
    net = EfficientNetLite("lite0")
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(1.0)
    return net.freeze()  # type: ignore[return-value]


def _folder(path: Path, n: int, seed: int) -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        yy, xx = np.mgrid[0:40, 0:48]
        a = np.stack([np.sin(xx / (2 + i)) * 100 + 128, np.cos(yy / (3 + i)) * 100 + 128,
                      np.full((40, 48), rng.integers(0, 255))], -1)
        Image.fromarray(a.astype(np.uint8)).save(path / f"img_{i:02d}.png")
    return path


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return _folder(tmp_path / "content", 8, 0), _folder(tmp_path / "style", 8, 1)


def _cfg(folders: tuple[Path, Path], out: Path, **kw) -> TrainConfig:  # noqa: ANN003
    base = dict(content=folders[0], style=folders[1], out=out, steps=4, batch_size=2, model_config="tiny", crop=32,
                scale_max=40, workers=0, log_every=2, val_every=2, sample_every=4, ckpt_every=2, val_frac=0.25,
                device="cpu", val_pairs=1, lr=1e-3, loss=FAST_LOSS)
    base.update(kw)
    return TrainConfig(**base)


def test_fused_passes_equal_separate_calls() -> None:
    torch.manual_seed(0)
    model = MambaST(tiny_config()).eval()
    c, s = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    gens = lambda: [torch.Generator().manual_seed(k) for k in range(3)]  # noqa: E731
    fused = three_passes(model, c, s, gens(), fuse=True)
    sep = three_passes(model, c, s, gens(), fuse=False)
    for a, b in zip(fused, sep):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_few_steps_decrease_the_loss() -> None:
    torch.manual_seed(0)
    model = MambaST(tiny_config())
    model.reset_parameters()
    model.train()
    losses = StyleLosses(tiny_loss_net(), FAST_LOSS)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    c, s = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    totals = []
    for i in range(8):
        gens = [torch.Generator().manual_seed(3 * i + k) for k in range(3)]
        t = losses(*three_passes(model, c, s, gens), c, s)["total"]
        opt.zero_grad()
        t.backward()
        opt.step()
        totals.append(float(t.detach()))
    assert totals[-1] < 0.9 * totals[0], totals


def test_train_resume_export_and_shards(folders: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    events: list[dict] = []
    path = train(_cfg(folders, out, steps=2), on_event=events.append, loss_net=tiny_loss_net())
    assert path == out / "model.safetensors" and path.is_file()
    assert (out / "ckpt.pt").is_file() and list((out / "samples").glob("*.png"))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "val" in kinds
    val = next(e for e in events if e["event"] == "val")
    assert set(val) >= {"model", "identity", "content_image", "color_transfer"} and val["content_image"]["content"] < 1e-6
    assert val["identity"]["content"] >= 0.0 and val["identity"]["style"] >= 0.0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["event"] == "done" and log[-1]["step"] == 2

    # resume: continues from step 2 to 3 and does not restart
    events2: list[dict] = []
    train(_cfg(folders, out, steps=3, resume=True), on_event=events2.append, loss_net=tiny_loss_net())
    assert events2[0] == {"event": "resume", "step": 2, "path": str(out / "ckpt.pt")}
    steps = [e["step"] for e in events2 if e["event"] == "log"]
    assert steps == [3]
    assert torch.load(out / "ckpt.pt", weights_only=False)["step"] == 3

    # export: bf16, loads strictly, metadata records the step
    cfg, sd, meta = load_weights(path)
    assert all(v.dtype == torch.bfloat16 for v in sd.values() if v.is_floating_point())
    assert json.loads(meta["extra"])["train_step"] == 3
    model = load_model(path)
    assert isinstance(model, MambaST)


def test_weight_ema_rate_update_and_swap() -> None:
    from mambast_cli.train.loop import WeightEMA

    lin = torch.nn.Linear(3, 2)
    ema = WeightEMA(lin, 0.9)
    assert ema.rate() == pytest.approx(1 / 10)             # early on the average follows the weights
    w0 = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update(lin)
    torch.testing.assert_close(ema.shadow["weight"], w0 + 0.9)        # moved by 1 − rate = 0.9
    for _ in range(200):
        ema.update(lin)
    assert ema.rate() == 0.9                               # then the decay asked for
    with ema.applied(lin) as m:
        torch.testing.assert_close(m.weight, ema.shadow["weight"])
    torch.testing.assert_close(lin.weight, w0 + 1.0)       # the weights are back


def test_training_with_ema_validates_and_exports_the_average(folders: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    events: list[dict] = []
    path = train(_cfg(folders, out, steps=2, ema=0.5, export_shards=True), on_event=events.append,
                 loss_net=tiny_loss_net())
    val = [e for e in events if e["event"] == "val"][-1]
    assert set(val["raw"]) == {"model", "identity"}        # the trained weights' losses beside the average's
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    avg, raw = ck["ema"]["shadow"], ck["model"]
    assert ck["ema"]["updates"] == 2 and any(not torch.equal(avg[k], raw[k]) for k in avg)
    _, sd, meta = load_weights(path)
    assert json.loads(meta["extra"])["ema_decay"] == 0.5
    for k, v in sd.items():                                # the export is the average, not the trained weights
        torch.testing.assert_close(v.float(), avg[k].to(torch.bfloat16).float(), rtol=0, atol=0)
    # resume keeps the average going (from the checkpoint, not from the weights)
    train(_cfg(folders, out, steps=3, ema=0.5, resume=True), loss_net=tiny_loss_net())
    assert torch.load(out / "ckpt.pt", weights_only=True)["ema"]["updates"] == 3
    with pytest.raises(UsageError):
        check_options(_cfg(folders, out, ema=1.0))


def test_shards_split_and_join_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MambaST(tiny_config())
    src = tmp_path / "model.safetensors"
    save_weights(src, model, source="test", dtype=torch.bfloat16)
    shards = split_weights(src, tmp_path / "shards", max_bytes=70_000)
    assert len(shards) > 1 and all(p.stat().st_size <= 70_000 for p in shards)
    joined = join_shards(tmp_path / "shards", tmp_path / "joined.safetensors")
    c1, sd1, m1 = load_weights(src)
    c2, sd2, m2 = load_weights(joined)                     # verifies the recorded sha256
    assert m1 == m2 and c1 == c2 and sd1.keys() == sd2.keys()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    load_model(joined)
    shards[0].unlink()
    with pytest.raises(WeightsError):
        join_shards(shards[1:], tmp_path / "x.safetensors")


def test_weights_files_get_the_usual_mode(tmp_path: Path) -> None:
    """Exported weights, shards and joined files are 0666 less the umask, like any file the user makes (safetensors'
    save_file made them 0600, so a studio's teammates could not read them); no temporary file is left."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        src = tmp_path / "model.safetensors"
        save_weights(src, MambaST(tiny_config()), source="test", dtype=torch.bfloat16)
        shards = split_weights(src, tmp_path / "shards", max_bytes=70_000)
        joined = join_shards(tmp_path / "shards", tmp_path / "joined.safetensors")
    finally:
        os.umask(old)
    for p in (src, joined, *shards):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    assert not [p for p in tmp_path.rglob(".*.part")]


def test_lr_schedules() -> None:
    paper = TrainConfig(Path("c"), Path("s"), Path("o"), steps=1000, recipe="paper", lr=1e-4)
    assert lr_at(0, paper) == lr_at(999, paper) == 1e-4
    ours = TrainConfig(Path("c"), Path("s"), Path("o"), steps=1000, recipe="ours", lr=1e-4, warmup=100)
    assert lr_at(0, ours) == pytest.approx(1e-6) and lr_at(99, ours) == pytest.approx(1e-4)
    assert lr_at(999, ours) == pytest.approx(1e-5, rel=1e-3)


def test_time_lr_schedule_is_the_larger_of_step_and_time_progress() -> None:
    assert time_progress(0, 600) == 0 and time_progress(300, 600) == pytest.approx(0.5)
    assert time_progress(900, 600) == 1.0 and time_progress(10, 0) == 1.0 and time_progress(10, -5) == 1.0
    assert time_progress(300, 600, start=0.5) == pytest.approx(0.75)       # a resumed run decays the rest
    cfg = TrainConfig(Path("c"), Path("s"), Path("o"), steps=1000, lr=1e-4, warmup=100, min_lr_frac=0.1,
                      lr_schedule="time", time_limit=10)
    assert lr_at(0, cfg, t_progress=1.0) == pytest.approx(1e-6)            # warm-up stays step-based
    assert lr_at(550, cfg, t_progress=0.0) == pytest.approx(5.5e-5)        # step progress 0.5: half-way down
    assert lr_at(550, cfg, t_progress=0.2) == pytest.approx(5.5e-5)        # step progress is larger: it wins
    assert lr_at(550, cfg, t_progress=1.0) == pytest.approx(1e-5)          # out of time: at the floor
    assert lr_at(200, cfg, t_progress=0.5) == pytest.approx(5.5e-5)        # time progress is larger: it wins
    assert lr_at(200, cfg, time_progress(300, 600)) == pytest.approx(5.5e-5)
    paper = TrainConfig(Path("c"), Path("s"), Path("o"), recipe="paper", lr=1e-4)
    assert lr_at(10, paper, t_progress=1.0) == 1e-4
    check_options(cfg)
    for bad in (dict(lr_schedule="time"), dict(lr_schedule="time", time_limit=10, recipe="paper"),
                dict(lr_schedule="minutes", time_limit=10)):
        with pytest.raises(UsageError):
            check_options(TrainConfig(Path("c"), Path("s"), Path("o"), **bad))


def test_time_lr_schedule_in_the_loop(folders: tuple[Path, Path], tmp_path: Path) -> None:
    # a 1-minute limit leaves no time past the final checkpoint/export reserve: the decay is done from the start,
    # the loop stops at its first log point, at the floor
    events: list[dict] = []
    out = tmp_path / "run"
    train(_cfg(folders, out, lr_schedule="time", time_limit=1.0, warmup=0), on_event=events.append,
          loss_net=tiny_loss_net())
    logs = [e for e in events if e["event"] == "log"]
    assert [e["step"] for e in logs] == [2] and logs[0]["lr"] == pytest.approx(1e-4)   # 0.1 x lr 1e-3
    assert events[-1]["reason"] == "time limit"
    assert torch.load(out / "ckpt.pt", weights_only=True)["lr_progress"] == 1.0


@pytest.fixture()
def init_file(tmp_path: Path) -> Path:
    """A tiny model's weights as a training run exports them: bf16, the unused keys left out."""
    torch.manual_seed(123)
    model = MambaST(tiny_config())
    model.reset_parameters()
    path = tmp_path / "init.safetensors"
    save_weights(path, model, source="test", dtype=torch.bfloat16, drop_unused=True)
    return path


def test_init_weights_start_a_fresh_run(folders: tuple[Path, Path], tmp_path: Path, init_file: Path) -> None:
    out = tmp_path / "run"
    events: list[dict] = []
    train(_cfg(folders, out, steps=0, ckpt_every=0, init_weights=str(init_file)), on_event=events.append,
          loss_net=tiny_loss_net())
    ck = torch.load(out / "ckpt.pt", weights_only=True)        # written at step 0, before any optimiser step
    want = load_model(init_file).state_dict()                 # fp32, unused keys filled back
    assert ck["step"] == 0 and ck["opt"]["state"] == {} and ck["model"].keys() == want.keys()
    for k, v in ck["model"].items():
        assert v.dtype == want[k].dtype and torch.equal(v, want[k]), k
    info = {"path": str(init_file.resolve()), "sha256": weights_id(init_file)}
    start = events[0]
    assert start["event"] == "start" and start["step"] == 0 and start["init_weights"] == info
    assert json.loads((out / "log.jsonl").read_text().splitlines()[0])["init_weights"] == info
    assert ck["init_weights"] == info
    assert json.loads(load_weights(out / "model.safetensors")[2]["extra"])["init_weights"] == info

    # without it, the same seed gives a different (fresh) init
    train(_cfg(folders, tmp_path / "fresh", steps=0, ckpt_every=0), loss_net=tiny_loss_net())
    fresh = torch.load(tmp_path / "fresh" / "ckpt.pt", weights_only=True)["model"]
    assert not all(torch.equal(fresh[k], want[k]) for k in want)


def test_init_weights_errors(folders: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import mambast_cli.model.weights as W

    from mambast_cli.cli import build_app

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    base = ["train", "--content", str(folders[0]), "--style", str(folders[1]), "--out", str(tmp_path / "run"),
            "--config", "tiny", "--device", "cpu", "--workers", "0", "--steps", "1"]
    for path, msg in ((tmp_path / "missing.safetensors", "weights file not found"),
                      (bad, "not a readable safetensors file")):
        r = CliRunner().invoke(build_app(), base + ["--init-weights", str(path)])
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 3 and len(lines) == 1 and lines[0].startswith("error: --init-weights "), r.stderr
        assert msg in lines[0]
        assert not (tmp_path / "run").exists()          # a bad option leaves no run folder behind
    # "default" is the bundled file; here a stand-in made for another config than the run's (tiny)
    other = tmp_path / "other.safetensors"
    save_weights(other, MambaST(MambaSTConfig(**{**tiny_config().to_dict(), "d_model": 24, "cnn_widths": (8, 8, 8)})),
                 source="test")
    monkeypatch.setattr(W, "default_weights_path", lambda: other)
    with pytest.raises(WeightsError, match="another model config"):
        train(_cfg(folders, tmp_path / "run2", init_weights="default"), loss_net=tiny_loss_net())
    monkeypatch.setattr(W, "default_weights_path", lambda: None)
    with pytest.raises(WeightsError, match="no trained weights are bundled"):
        train(_cfg(folders, tmp_path / "run2", init_weights="default"), loss_net=tiny_loss_net())
    r = CliRunner().invoke(build_app(), base + ["--lr-schedule", "time"])
    assert r.exit_code == 2 and "needs --time-limit" in r.stderr


def test_resume_beats_init_weights(folders: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_cfg(folders, out, steps=2), loss_net=tiny_loss_net())
    events: list[dict] = []
    missing = str(tmp_path / "never-read.safetensors")      # not even opened: the checkpoint wins
    train(_cfg(folders, out, steps=3, resume=True, init_weights=missing), on_event=events.append,
          loss_net=tiny_loss_net())
    assert events[0] == {"event": "resume", "step": 2, "path": str(out / "ckpt.pt")}
    assert events[1]["event"] == "note" and "ignored" in events[1]["text"] and missing in events[1]["text"]
    assert events[2]["event"] == "start" and events[2]["step"] == 2 and events[2]["init_weights"] is None
    assert [e["step"] for e in events if e["event"] == "log"] == [3]


def test_grid_weight_in_the_loop(folders: tuple[Path, Path], tmp_path: Path) -> None:
    """--grid-weight trains with the patch-grid term (logged as "grid"); validation reports the grid score of the
    model's outputs whatever the weight."""
    import math

    events: list[dict] = []
    loss = LossConfig(content_taps=("block4",), style_taps=("block0", "block2"), grid_weight=1.0)
    train(_cfg(folders, tmp_path / "run", steps=2, loss=loss), loss_net=tiny_loss_net(), on_event=events.append)
    logs = [e for e in events if e["event"] == "log"]
    vals = [e for e in events if e["event"] == "val"]
    assert logs and all(math.isfinite(e["grid"]) and e["grid"] > 0 for e in logs)
    assert vals and all(math.isfinite(v[k]["grid"]) for v in vals for k in ("model", "identity", "color_transfer"))
