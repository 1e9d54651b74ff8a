"""Tests for mambast_cli.pipeline.multi: several worker processes (CPU workers here) behind ``--devices``.

Each run spawns two worker processes (a few seconds each on 2 CPU cores; marked slow), so the cases are few
and combined.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mambast_cli.errors import DeviceError, UsageError
from mambast_cli.pipeline import Event, RunOptions, plan_jobs, run_plan
from mambast_cli.pipeline.multi import parse_devices, run_plan_multi

OPTS = RunOptions(size=0, max_side=0, decode_workers=2, write_workers=2, fsync=False, batch_size=2)


def _parts(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".part-" in p.name]


def _folder(make_image: Any, n: int = 9) -> None:
    for i in range(n):
        make_image(f"in/sub{i % 2}/img{i}.jpg", size=(40 + i, 32), color=(20 * i, 90, 160))


def test_parse_devices() -> None:
    assert parse_devices("cpu,cpu") == ["cpu", "cpu"]
    assert parse_devices(" cpu ") == ["cpu"]
    with pytest.raises(UsageError):
        parse_devices("gpu0")
    with pytest.raises(UsageError):
        parse_devices("")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(DeviceError):
            parse_devices("all")
        with pytest.raises(DeviceError):
            parse_devices("0,1")


def test_refuses_stdout_plan(tmp_path: Path, make_image: Any) -> None:
    a, s = make_image("a.jpg"), make_image("s.jpg")
    plan = plan_jobs([str(a)], [str(s)], None)
    with pytest.raises(UsageError):
        run_plan_multi(plan, ["cpu", "cpu"], {}, OPTS)


def test_dead_worker_temporaries_are_removed(tmp_path: Path, make_image: Any) -> None:
    """A worker killed mid-write leaves ``.<name>.part-<pid>-<hex>``; the parent removes it when it sees the death
    (deterministic stand-in for the race in the slow worker-death test below)."""
    import types

    from mambast_cli.pipeline.multi import _Parent, _Worker

    for i in range(3):
        make_image(f"in/img{i}.jpg")
    s = make_image("s.png")
    out = tmp_path / "out"
    plan = plan_jobs([str(tmp_path / "in")], [str(s)], out)
    parent = _Parent(plan, ["cpu", "cpu"], {}, OPTS, None, None, 1, None, "spawn")
    parent.shared_stop = types.SimpleNamespace(is_set=lambda: False)
    dead_pid, live_pid = 2 ** 22 + 17, os.getpid()
    keys = sorted(plan.jobs())
    proc = types.SimpleNamespace(pid=dead_pid, exitcode=-9, join=lambda timeout=None: None)
    conn = types.SimpleNamespace(poll=lambda t=0: False)
    w = _Worker(rank=1, device="cpu", proc=proc, conn=conn, state="running", assigned={0: set(keys[:2])})
    out.mkdir()
    left = [out / f".{plan.output_for(*k).name}.part-{dead_pid}-0123abcd" for k in keys]   # type: ignore[union-attr]
    other = out / f".{plan.output_for(*keys[0]).name}.part-{live_pid}-0123abcd"              # type: ignore[union-attr]
    for p in (*left, other):
        p.write_bytes(b"half a jpeg")
    events: list[Event] = []
    parent.on_event = events.append
    parent.gone(w)
    assert not left[0].exists() and not left[1].exists()    # the items it held: their temporaries are gone
    assert left[2].exists() and other.exists()              # not held by it, or another process's: untouched
    assert sorted(e.output for e in events if e.kind == "error") == sorted(plan.output_str(*k) for k in keys[:2])


@pytest.mark.slow
def test_two_workers_every_output_once_and_bad_image(tmp_path: Path, make_image: Any, fake_engine: Any) -> None:
    fake_engine("slow")
    os.environ["MAMBAST_FAKE_DELAY"] = "0.02"
    _folder(make_image)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    s1, s2 = make_image("s/one.png", color=(255, 0, 0)), make_image("s/two.png", color=(0, 0, 255))
    out = tmp_path / "out"
    make_image("out/sub0/img0__one.jpg")  # already done: skipped, not recomputed
    plan = plan_jobs([str(tmp_path / "in")], [str(s1), str(s2)], out)
    assert plan.n_pending == 19 and plan.n_done == 1
    events: list[Event] = []
    try:
        report = run_plan_multi(plan, ["cpu", "cpu"], {}, OPTS, on_event=events.append, task_size=1)
    finally:
        os.environ.pop("MAMBAST_FAKE_DELAY", None)
    items = [e for e in events if e.kind in ("ok", "error")]
    outputs = [e.output for e in items]
    assert len(outputs) == len(set(outputs)) == 19          # one event per planned item, never two
    assert report.ok == 17 and report.failed == 2 and report.skipped == 1
    assert {e.input for e in report.errors} == {str(tmp_path / "in" / "broken.jpg")}
    assert all(e.error == "InputError" for e in report.errors)
    written = sorted(os.path.relpath(p, out) for p in out.rglob("*.jpg"))
    expected = sorted({os.path.relpath(plan.output_for(ci, si), out) for ci, si in plan.jobs()
                       if "broken" not in plan.contents[ci].display} | {"sub0/img0__one.jpg"})
    assert written == expected
    assert not _parts(out)


@pytest.mark.slow
def test_worker_death_keeps_other_outputs_and_exits_1(tmp_path: Path, make_image: Any, fake_engine: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake_engine("die,slow")
    monkeypatch.setenv("MAMBAST_FAKE_DELAY", "0.02")
    monkeypatch.setenv("MAMBAST_FAKE_DIE_RANK", "1")
    monkeypatch.setenv("MAMBAST_FAKE_DIE_AFTER", "2")
    _folder(make_image, n=40)  # enough that the second worker gets work even if the first fills its decode window
    s = make_image("style.png")
    out = tmp_path / "out"
    from mambast_cli.cli import build_app

    res = CliRunner().invoke(build_app(), ["stylize", str(tmp_path / "in"), "-s", str(s), "-o", str(out),
                                           "--devices", "cpu,cpu", "--size", "0", "--batch-size", "2", "--json"])
    assert res.exit_code == 1, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    items = [d for d in lines if d["event"] in ("ok", "error")]
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["planned"] == 40
    assert len(items) == len({d["output"] for d in items}) == 40    # every item reported exactly once
    died = [d for d in items if d["event"] == "error"]
    assert died and all(d["error"] == "DeviceError" and "stopped" in d["message"] for d in died)
    ok = {d["output"] for d in items if d["event"] == "ok"}
    assert len(ok) == 40 - len(died) and all(Path(p).is_file() for p in ok)   # the survivor's work is all there
    assert summary["ok"] == len(ok) and summary["failed"] == len(died)
    assert any(d["event"] == "note" and "worker 1" in d.get("message", "") for d in lines)
    assert not _parts(out)
    # the rerun does only what was lost
    monkeypatch.setenv("MAMBAST_FAKE_ENGINE", "1")
    res2 = CliRunner().invoke(build_app(), ["stylize", str(tmp_path / "in"), "-s", str(s), "-o", str(out),
                                            "--devices", "cpu,cpu", "--size", "0", "--json"])
    assert res2.exit_code == 0, res2.output
    summary2 = [json.loads(line) for line in res2.stdout.splitlines() if line.startswith("{")][-1]
    # a death between a rename and its "ok" event leaves a complete output that the rerun skips, so: at most
    assert summary2["ok"] + summary2["skipped"] == 40 and summary2["ok"] <= len(died) and summary2["skipped"] >= len(ok)


@pytest.mark.slow
def test_real_engine_styles_encoded_once_and_outputs_match_one_device(tmp_path: Path, make_image: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from mambast_cli.model import MambaST, tiny_config
    from mambast_cli.model.weights import save_weights
    from mambast_cli.pipeline import create_engine

    monkeypatch.delenv("MAMBAST_FAKE_ENGINE", raising=False)
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, MambaST(tiny_config()), source="test")
    for i in range(4):
        make_image(f"in/c{i}.png", size=(24, 16 + 8 * (i % 2)), noise=True)
    styles = [str(make_image(f"s/st{k}.png", size=(24, 24), noise=True)) for k in range(2)]
    kw = dict(weights=str(weights), precision="fp32", seed=3, cache_dir=str(tmp_path / "cache"))
    opts = RunOptions(size=0, max_side=0, decode_workers=1, write_workers=1, fsync=False)

    plan = plan_jobs([str(tmp_path / "in")], styles, tmp_path / "multi", fmt="png")
    report = run_plan_multi(plan, ["cpu", "cpu"], kw, opts, task_size=1)
    assert report.ok == 8 and report.failed == 0
    assert report.style_encodes == 2          # each style encoded by one worker only; the other read the disk cache

    ref_plan = plan_jobs([str(tmp_path / "in")], styles, tmp_path / "single", fmt="png")
    ref = run_plan(ref_plan, create_engine(device="cpu", **{**kw, "cache_dir": str(tmp_path / "cache2")}), opts)
    assert ref.ok == 8
    for p in sorted((tmp_path / "single").glob("*.png")):
        a = np.asarray(Image.open(p), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "multi" / p.name), dtype=np.int16)
        assert np.abs(a - b).max() <= 1, p.name


@pytest.mark.slow
def test_stop_drops_the_rest_without_failing_it(tmp_path: Path, make_image: Any, fake_engine: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    fake_engine("slow")
    monkeypatch.setenv("MAMBAST_FAKE_DELAY", "0.2")
    _folder(make_image, n=10)
    s = make_image("style.png")
    plan = plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out")
    stop = threading.Event()

    def on_event(ev: Event) -> None:
        if ev.kind == "ok":
            stop.set()  # like Ctrl-C after the first output

    report = run_plan_multi(plan, ["cpu", "cpu"], {}, OPTS, on_event=on_event, stop=stop, task_size=1)
    assert report.interrupted and report.failed == 0 and 1 <= report.ok < 10
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == report.ok
    assert not _parts(tmp_path / "out")
