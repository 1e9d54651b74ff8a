"""Tests for `mambast video --devices` (mambast_cli/video/multi.py): CPU workers, tiny generated videos.

Each run spawns worker processes (a few seconds each on 2 CPU cores; marked slow), so the cases are few and combined.
The workers use the fake engine (``MAMBAST_FAKE_ENGINE``, inherited by spawned processes), except one run with a
tiny real model that checks the style is encoded once.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

av = pytest.importorskip("av")
from typer.testing import CliRunner  # noqa: E402

from test_video import make_video, video_facts  # noqa: E402  (same folder: pytest puts it on sys.path)


def _style(tmp_path: Path) -> str:
    from PIL import Image

    p = tmp_path / "art.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(p)
    return str(p)


def _parts(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".part-" in p.name]


def _invoke(args: list[str]) -> tuple[int, list[dict[str, Any]], str]:
    from mambast_cli.video.cli import video_command
    import typer

    app = typer.Typer()
    app.command("video")(video_command)
    app.command("other")(lambda: None)
    r = CliRunner().invoke(app, ["video", *args, "--json"])
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return r.exit_code, events, r.output


@pytest.mark.slow
def test_two_videos_two_workers_and_a_corrupt_one(tmp_path: Path, fake_engine: Any) -> None:
    fake_engine("1")
    src = tmp_path / "in"
    src.mkdir()
    make_video(src / "a.mp4", n=12)
    make_video(src / "b.mp4", n=7, audio=False)
    (src / "c_broken.mp4").write_bytes(os.urandom(3000))
    style, out = _style(tmp_path), tmp_path / "out"
    code, events, output = _invoke([str(src), "-s", style, "-o", str(out), "--devices", "cpu,cpu"])
    assert code == 1, output
    kinds = [e["event"] for e in events]
    assert kinds[0] == "plan" and kinds[-1] == "summary"
    done = {Path(e["input"]).name: e for e in events if e["event"] == "done"}
    errors = [e for e in events if e["event"] == "error"]
    assert set(done) == {"a.mp4", "b.mp4"} and done["a.mp4"]["frames"] == 12 and done["b.mp4"]["frames"] == 7
    assert [Path(e["input"]).name for e in errors] == ["c_broken.mp4"]
    assert {e["device"] for e in events if e["event"] == "start"} <= {"cpu"}
    assert events[-1] == {"event": "summary", "done": 2, "skipped": 0, "failed": 1, "exit_code": 1}
    assert sorted(os.listdir(out)) == ["a__art.mp4", "b__art.mp4"]        # nothing for the broken one, no temp file
    assert len(video_facts(out / "a__art.mp4")["times"]) == 12
    assert len(video_facts(out / "b__art.mp4")["times"]) == 7
    assert not _parts(tmp_path)
    # the rerun skips both finished outputs and fails the broken input again
    code, events, _ = _invoke([str(src), "-s", style, "-o", str(out), "--devices", "cpu,cpu"])
    assert code == 1 and events[-1]["skipped"] == 2 and events[-1]["failed"] == 1


@pytest.mark.slow
def test_single_input_says_one_device_is_used(tmp_path: Path, fake_engine: Any) -> None:
    fake_engine("1")
    make_video(tmp_path / "v.mp4", n=6, audio=False)
    out = tmp_path / "v_out.mp4"
    code, events, output = _invoke([str(tmp_path / "v.mp4"), "-s", _style(tmp_path), "-o", str(out),
                                    "--devices", "cpu,cpu"])
    assert code == 0, output
    notes = [e for e in events if e["event"] == "note"]
    assert len(notes) == 1 and "only 1 of 2 devices" in notes[0]["message"]
    assert len(video_facts(out)["times"]) == 6 and not _parts(tmp_path)
    code, _, _ = _invoke([str(tmp_path / "v.mp4"), "-s", _style(tmp_path), "--devices", "cpu,cpu", "--device", "cpu"])
    assert code == 2                                                        # --device and --devices together


@pytest.mark.slow
def test_dead_worker_fails_only_its_video(tmp_path: Path, fake_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from mambast_cli.video.multi import run_videos_multi
    from mambast_cli.video.run import VideoOptions

    fake_engine("die,slow")                    # the worker of rank 1 exits (os._exit) once it has done 4 frames
    monkeypatch.setenv("MAMBAST_FAKE_DELAY", "0.02")
    monkeypatch.setenv("MAMBAST_FAKE_DIE_RANK", "1")
    monkeypatch.setenv("MAMBAST_FAKE_DIE_AFTER", "4")
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        make_video(tmp_path / "in" / f"{name}.mp4", n=12, audio=False)
    events: list[dict[str, Any]] = []
    rep = run_videos_multi([tmp_path / "in"], _style(tmp_path), ["cpu", "cpu"], {},
                           VideoOptions(output=str(tmp_path / "out"), batch=2), on_event=events.append)
    failed = [i for i in rep.items if i.status == "failed"]
    done = [i for i in rep.items if i.status == "done"]
    assert len(failed) == 1 and len(done) == 2 and not rep.ok
    assert "stopped" in failed[0].message
    assert any(e["event"] == "note" and "worker 1" in e["message"] for e in events)
    assert sorted(os.listdir(tmp_path / "out")) == sorted(Path(i.output).name for i in done)   # temp file removed
    for i in done:
        assert len(video_facts(Path(i.output))["times"]) == 12


@pytest.mark.slow
def test_real_engine_encodes_the_style_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from mambast_cli.model import MambaST, tiny_config
    from mambast_cli.model.weights import save_weights
    from mambast_cli.video.multi import run_videos_multi
    from mambast_cli.video.run import VideoOptions

    monkeypatch.delenv("MAMBAST_FAKE_ENGINE", raising=False)
    monkeypatch.setenv("MAMBAST_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, MambaST(tiny_config()), source="test")
    (tmp_path / "in").mkdir()
    make_video(tmp_path / "in" / "a.mp4", n=4, audio=False)
    make_video(tmp_path / "in" / "b.mp4", n=4, audio=False)
    rep = run_videos_multi([tmp_path / "in"], _style(tmp_path), ["cpu", "cpu"],
                           {"weights": str(weights), "precision": "fp32"}, VideoOptions(output=str(tmp_path / "out")))
    assert rep.ok and rep.count("done") == 2
    assert rep.style_encodes == 1              # worker 0 encoded it; the other read it from the disk cache
    assert not _parts(tmp_path)


@pytest.mark.slow
def test_cancel_discards_videos_in_flight(tmp_path: Path, fake_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from mambast_cli.video.multi import run_videos_multi
    from mambast_cli.video.run import VideoOptions

    fake_engine("slow")
    monkeypatch.setenv("MAMBAST_FAKE_DELAY", "0.05")
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        make_video(tmp_path / "in" / f"{name}.mp4", n=24, audio=False)
    cancel = threading.Event()

    def on_event(ev: dict[str, Any]) -> None:
        if ev["event"] == "progress":
            cancel.set()                       # like Ctrl-C while videos are being written

    with pytest.raises(KeyboardInterrupt):
        run_videos_multi([tmp_path / "in"], _style(tmp_path), ["cpu", "cpu"], {},
                         VideoOptions(output=str(tmp_path / "out"), batch=2), on_event=on_event, cancel=cancel)
    left = os.listdir(tmp_path / "out") if (tmp_path / "out").exists() else []
    assert all(not n.startswith(".") for n in left) and not _parts(tmp_path)
    for n in left:                             # anything that made it is complete
        assert len(video_facts(tmp_path / "out" / n)["times"]) == 24
