"""`mambast train` as a user runs it: bad options and inputs end in one line and an exit code, never a traceback,
and an earlier run's checkpoint or weights are never lost (tiny config, CPU)."""
from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mambast_cli.train import loop as train_loop
from mambast_cli.train.cli import train_command

from tests.test_train_loop import FAST_LOSS, _folder, tiny_loss_net

app = typer.Typer()
app.command()(train_command)


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return _folder(tmp_path / "content", 8, 0), _folder(tmp_path / "style", 8, 1)


@pytest.fixture(autouse=True)
def _fast_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The random-weight loss network and shallow taps: the CLI path, at the test suite's cost."""
    monkeypatch.setattr(train_loop, "load_loss_net", lambda spec: tiny_loss_net())
    orig = train_loop.StyleLosses
    monkeypatch.setattr(train_loop, "StyleLosses", lambda net, cfg: orig(net, FAST_LOSS))


def run(folders: tuple[Path, Path], out: Path, *args: str):  # noqa: ANN201
    base = ["--content", str(folders[0]), "--style", str(folders[1]), "--out", str(out), "--config", "tiny",
            "--device", "cpu", "--crop", "32", "--scale-max", "40", "--workers", "0", "--steps", "3"]
    return CliRunner().invoke(app, base + list(args))


def one_error_line(res) -> str:  # noqa: ANN001
    """The output of a refused run: exactly one line, starting with 'error:' (no traceback)."""
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (["--batch-size", "0"], "--batch-size"), (["--steps", "-1"], "--steps"), (["--log-every", "0"], "--log-every"),
    (["--lr", "-1"], "--lr"), (["--workers", "-1"], "--workers"), (["--crop", "0"], "--crop"),
    (["--val-frac", "1"], "--val-frac"), (["--time-limit", "-1"], "--time-limit"), (["--warmup", "-5"], "--warmup"),
    (["--device", "tpu"], "--device"),
])
def test_bad_option_values_are_usage_errors(folders: tuple[Path, Path], tmp_path: Path, args: list[str],
                                            words: str) -> None:
    res = run(folders, tmp_path / "run", *args)
    assert res.exit_code == 2, res.output
    assert words in one_error_line(res)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_resume_from_a_damaged_checkpoint_is_refused_and_keeps_it(folders: tuple[Path, Path], tmp_path: Path,
                                                                   damage: str) -> None:
    out = tmp_path / "run"
    assert run(folders, out).exit_code == 0
    ck = out / "ckpt.pt"
    good = ck.read_bytes()
    bad = {"truncated": good[: len(good) // 3], "garbage": b"garbage\n", "empty": b""}[damage]
    ck.write_bytes(bad)
    weights = (out / "model.safetensors").read_bytes()
    res = run(folders, out, "--resume", "--steps", "5")
    assert res.exit_code == 3
    assert "not a readable training checkpoint" in one_error_line(res)
    assert ck.read_bytes() == bad and (out / "model.safetensors").read_bytes() == weights


def test_resume_a_run_of_another_model_config_is_refused(folders: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    out = tmp_path / "run"
    assert run(folders, out).exit_code == 0
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    ck["model_config"]["d_model"] = 32                    # as a run of another size would have written it
    torch.save(ck, out / "ckpt.pt")
    res = run(folders, out, "--resume", "--steps", "5")
    assert res.exit_code == 3
    assert "another model config" in one_error_line(res)


@pytest.mark.parametrize("left", ["both", "weights only"])
def test_a_fresh_run_never_overwrites_an_earlier_run(folders: tuple[Path, Path], tmp_path: Path, left: str) -> None:
    out = tmp_path / "run"
    assert run(folders, out).exit_code == 0
    if left == "weights only":
        (out / "ckpt.pt").unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for extra in ([], ["--steps", "1"], ["--resume"] if left == "weights only" else []):
        res = run(folders, out, *extra)
        assert res.exit_code == 3
        assert "already holds a run" in one_error_line(res)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    if left == "both":                                    # --resume still continues it
        assert run(folders, out, "--resume", "--steps", "4").exit_code == 0


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupted_run_keeps_its_steps_in_a_checkpoint(folders: tuple[Path, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, signame: str,
                                                             code: int) -> None:
    import json
    import os
    import signal

    import torch

    from mambast_cli import errors

    monkeypatch.setattr(errors, "_interrupt_exit", 130)            # restored afterwards, as is the handler below
    old_term, old_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    # a test run started in the background (CI runners, `cmd &`) inherits SIGINT ignored: give it Python's handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    lr_at = train_loop.lr_at

    def lr_then_signal(step: int, *a):  # noqa: ANN002, ANN202
        if step == 2:                                              # two optimiser steps done, none checkpointed
            os.kill(os.getpid(), getattr(signal, signame))
        return lr_at(step, *a)

    monkeypatch.setattr(train_loop, "lr_at", lr_then_signal)
    out = tmp_path / "run"
    try:
        res = run(folders, out, "--steps", "10", "--ckpt-every", "100", "--log-every", "100")
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    assert res.exit_code == code, res.output
    assert "interrupted at step 2" in res.output and "Traceback" not in res.output
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 2
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["event"] == "interrupted"
    monkeypatch.setattr(train_loop, "lr_at", lr_at)
    res = run(folders, out, "--resume", "--steps", "3")
    assert res.exit_code == 0 and "resumed from" in res.output and (out / "model.safetensors").is_file()


def test_unreadable_training_images_are_skipped_with_a_warning(folders: tuple[Path, Path], tmp_path: Path) -> None:
    from mambast_cli.errors import InputError
    from mambast_cli.train.data import CropDataset

    style = folders[1]
    good = next(style.glob("*.png")).read_bytes()
    (style / "trunc.png").write_bytes(good[:60])          # not held out (name hash), so training draws it
    (style / "notes.txt").write_text("not a picture")     # not an image extension: never listed
    out = tmp_path / "run"
    res = run(folders, out, "--steps", "8", "--batch-size", "4")
    assert res.exit_code == 0, res.output
    warned = [ln for ln in res.output.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and "trunc.png" in warned[0]
    assert (out / "model.safetensors").is_file()
    with pytest.raises(InputError, match="none of the 1"):
        CropDataset([style / "trunc.png"], crop=32, scale_max=40)[0]
