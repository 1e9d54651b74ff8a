"""Training loop (tiny config, CPU): loss goes down, resume continues, export and shards round-trip."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mambast_cli.model import MambaST, tiny_config
from mambast_cli.model.weights import load_model, load_weights, save_weights
from mambast_cli.train.loop import TrainConfig, lr_at, three_passes, train
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
    assert set(val) >= {"model", "content_image", "color_transfer"} and val["content_image"]["content"] < 1e-6
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
    from mambast_cli.errors import WeightsError
    with pytest.raises(WeightsError):
        join_shards(shards[1:], tmp_path / "x.safetensors")


def test_lr_schedules() -> None:
    paper = TrainConfig(Path("c"), Path("s"), Path("o"), steps=1000, recipe="paper", lr=1e-4)
    assert lr_at(0, paper) == lr_at(999, paper) == 1e-4
    ours = TrainConfig(Path("c"), Path("s"), Path("o"), steps=1000, recipe="ours", lr=1e-4, warmup=100)
    assert lr_at(0, ours) == pytest.approx(1e-6) and lr_at(99, ours) == pytest.approx(1e-4)
    assert lr_at(999, ours) == pytest.approx(1e-5, rel=1e-3)
