"""Tests for mambast_cli.cli through typer's CliRunner: exit codes, outputs, NDJSON purity, stdin modes."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from mambast_cli.cli import build_app

runner = CliRunner()
app = build_app()


def _invoke(args: list[str], **kw: Any) -> Any:
    return runner.invoke(app, args, **kw)


def _parts(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".part-" in p.name]


@pytest.fixture
def folder(tmp_path: Path, make_image: Any) -> Path:
    for i in range(3):
        make_image(f"in/p{i}.jpg", size=(40, 30), noise=True)
    make_image("style.png", color=(10, 20, 200))
    return tmp_path


def test_version_is_instant_and_light() -> None:
    code = "import sys; from mambast_cli.cli import main; sys.argv=['mambast','--version']\ntry: main()\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["mambast 0.1.0", "False False"]
    assert _invoke(["--version"]).stdout.strip() == "mambast 0.1.0"


def test_stylize_ok_exit_0(folder: Path, fake_engine: Any) -> None:
    r = _invoke(["stylize", str(folder / "in"), "--style", str(folder / "style.png"), "-o", str(folder / "out"), "--size", "32"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["p0__style.jpg", "p1__style.jpg", "p2__style.jpg"]
    assert r.stdout == ""  # humans read stderr
    assert "3 written" in r.stderr
    # rerun: everything skipped, still exit 0, engine not even built (noweights would fail otherwise)
    fake_engine("noweights")
    r2 = _invoke(["stylize", str(folder / "in"), "--style", str(folder / "style.png"), "-o", str(folder / "out")])
    assert r2.exit_code == 0 and "3 skipped" in r2.stderr


def test_bad_file_exit_1_others_complete(folder: Path, fake_engine: Any) -> None:
    (folder / "in" / "bad.jpg").write_text("not an image")
    r = _invoke(["stylize", str(folder / "in"), "-s", str(folder / "style.png"), "-o", str(folder / "out")])
    assert r.exit_code == 1
    assert len(list((folder / "out").glob("*.jpg"))) == 3 and not _parts(folder)
    fails = [line for line in r.stderr.splitlines() if line.startswith("failed:")]
    assert len(fails) == 1 and "bad.jpg" in fails[0] and "not a recognised image" in fails[0]


def test_json_is_pure_ndjson(folder: Path, fake_engine: Any) -> None:
    (folder / "in" / "bad.jpg").write_bytes(b"")
    r = _invoke(["stylize", str(folder / "in"), "-s", str(folder / "style.png"), "-o", str(folder / "out"), "--json"])
    assert r.exit_code == 1
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["event"] for e in events].count("ok") == 3
    assert [e["event"] for e in events].count("error") == 1
    assert events[-1]["event"] == "summary" and events[-1]["ok"] == 3 and events[-1]["exit_code"] == 1


def test_usage_errors_exit_2(folder: Path, fake_engine: Any) -> None:
    base = ["stylize", str(folder / "in"), "-o", str(folder / "out")]
    assert _invoke(base).exit_code == 2  # no --style
    assert _invoke(base + ["-s", str(folder / "style.png"), "--alpha", "2"]).exit_code == 2
    assert _invoke(base + ["-s", str(folder / "style.png"), "--format", "bmp"]).exit_code == 2
    r = _invoke(["stylize", str(folder / "in"), "-s", str(folder / "style.png"), "-o", "-"])
    assert r.exit_code == 2 and "one picture" in r.stderr
    assert _invoke(["stylize", "-", "-s", str(folder / "style.png"), "-o", "-", "--json"], input=b"").exit_code == 2


def test_could_not_start_exit_3(folder: Path, fake_engine: Any) -> None:
    fake_engine("noweights")
    r = _invoke(["stylize", str(folder / "in"), "-s", str(folder / "style.png"), "-o", str(folder / "out"), "--json"])
    assert r.exit_code == 3 and "no trained weights" in r.stderr and "hint" in r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["event"] == "fatal"
    fake_engine("baddevice")
    assert _invoke(["stylize", str(folder / "in"), "-s", str(folder / "style.png"), "-o", str(folder / "o2")]).exit_code == 3
    fake_engine("1")
    (folder / "file").write_text("x")
    r = _invoke(["stylize", str(folder / "in"), "-s", str(folder / "style.png"), "-o", str(folder / "file" / "out")])
    assert r.exit_code == 3 and "cannot create folder" in r.stderr


def test_unwritable_output_mid_run_exit_3(folder: Path, fake_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    real_replace = os.replace

    def enospc(src: str, dst: str) -> None:
        if str(folder) in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", enospc)
    r = _invoke(["stylize", str(folder / "in"), "-s", str(folder / "style.png"), "-o", str(folder / "out")])
    assert r.exit_code == 3 and "No space left" in r.stderr and r.stderr.count("error:") == 1
    assert not _parts(folder) and not list((folder / "out").glob("*.jpg"))


def test_dry_run_writes_nothing(folder: Path, fake_engine: Any) -> None:
    fake_engine("noweights")  # the engine must not even be built
    r = _invoke(["stylize", str(folder / "in"), "-s", str(folder / "style.png"), "-o", str(folder / "out"), "--dry-run", "--json"])
    assert r.exit_code == 0
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["event"] for e in events] == ["planned"] * 3 + ["summary"]
    assert not (folder / "out").exists()
    # a missing input fails the dry run as it would fail the run (it used to end with exit 0)
    r = _invoke(["stylize", str(folder / "in"), str(folder / "nope.jpg"), "-s", str(folder / "style.png"),
                 "-o", str(folder / "out"), "--dry-run", "--json"])
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.exit_code == 1 and events[-1]["failed"] == 1 and events[-1]["exit_code"] == 1 and events[-1]["planned"] == 3
    assert not (folder / "out").exists()


def test_stdin_path_lists(folder: Path, fake_engine: Any, make_image: Any) -> None:
    odd = make_image("in/odd\nname.png")
    listed = "\n".join(str(p) for p in sorted((folder / "in").glob("p*.jpg"))) + "\n"
    r = _invoke(["stylize", "-", "-s", str(folder / "style.png"), "-o", str(folder / "out")], input=listed)
    assert r.exit_code == 0, r.output
    assert len(list((folder / "out").iterdir())) == 3
    r = _invoke(["stylize", "-", "-0", "-s", str(folder / "style.png"), "-o", str(folder / "out0")],
                input=os.fsencode(str(odd)) + b"\0")
    assert r.exit_code == 0, r.output
    assert [p.name for p in (folder / "out0").iterdir()] == ["odd_name__style.jpg"]


def test_stdin_image_to_stdout(folder: Path, fake_engine: Any) -> None:
    data = (folder / "in" / "p0.jpg").read_bytes()
    r = _invoke(["stylize", "-", "-s", str(folder / "style.png"), "-o", "-", "--format", "png", "--size", "0", "-q"], input=data)
    assert r.exit_code == 0, r.stderr
    img = Image.open(io.BytesIO(r.stdout_bytes))
    assert img.format == "PNG" and img.size == (40, 30)


def test_stdin_binary_that_is_not_a_known_picture_is_a_usage_error(folder: Path, fake_engine: Any) -> None:
    # a PPM (what `convert x.jpg ppm:-` pipes) is not among the stdin signatures: its bytes must not be taken as
    # a list of paths, one "failed: <binary>: no such file" line per chunk between newline bytes
    buf = io.BytesIO()
    Image.open(folder / "in" / "p0.jpg").save(buf, "PPM")
    data = buf.getvalue()
    assert b"\0" in data
    r = _invoke(["stylize", "-", "-s", str(folder / "style.png"), "-o", str(folder / "out")], input=data)
    assert r.exit_code == 2, r.output
    assert "failed:" not in r.stderr and len(r.stderr.splitlines()) == 1
    assert "not a list of paths" in r.stderr
    assert not (folder / "out").exists()


def test_sheet(folder: Path, fake_engine: Any, make_image: Any) -> None:
    s2 = make_image("s2.jpg", color=(0, 200, 0))
    out = folder / "sheet.png"
    contents = [str(p) for p in sorted((folder / "in").glob("*.jpg"))]
    r = _invoke(["sheet", *contents, "-s", str(folder / "style.png"), "-s", str(s2), "-o", str(out), "--cell", "64", "--size", "32"])
    assert r.exit_code == 0, r.output
    w, h = Image.open(out).size
    assert w > 3 * 64 and h > 4 * 64
    (folder / "broken.jpg").write_text("nope")
    r = _invoke(["sheet", contents[0], str(folder / "broken.jpg"), "-s", str(folder / "style.png"), "-o", str(out)])
    assert r.exit_code == 1 and "broken.jpg" in r.stderr


def test_sheet_never_overwrites_one_of_its_inputs(folder: Path, fake_engine: Any, make_image: Any) -> None:
    content = folder / "in" / "p0.jpg"
    style_jpg = make_image("s.jpg", color=(0, 200, 0))
    link = folder / "link.jpg"
    link.symlink_to(content)
    for given, target, name in ((content, style_jpg, "s.jpg"), (content, content, "p0.jpg"), (link, content, "link.jpg")):
        before = {p: p.read_bytes() for p in (content, style_jpg)}
        r = _invoke(["sheet", str(given), "-s", str(style_jpg), "-o", str(target), "--cell", "32", "--size", "32"])
        assert r.exit_code == 2, r.output
        assert "would overwrite" in r.stderr and name in r.stderr
        assert {p: p.read_bytes() for p in (content, style_jpg)} == before


def test_info(fake_engine: Any) -> None:
    r = _invoke(["info", "--json"])
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["mambast"] == "0.1.0" and d["engine"]["engine"] == "fake"
    fake_engine("noweights")
    r = _invoke(["info"])
    assert r.exit_code == 3 and "torch:" in r.stderr


def test_optional_commands_never_break_the_cli() -> None:
    import typer.main

    names = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert {"stylize", "sheet", "info", "train", "bench", "weights", "cache"} <= names
    assert _invoke(["train", "--help"]).exit_code == 0
    assert _invoke(["bench", "--help"]).exit_code == 0


def test_cache_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMBAST_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache" / "styles").mkdir(parents=True)
    (tmp_path / "cache" / "styles" / "abc.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}" + b"x" * 100)
    r = _invoke(["cache", "size", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["bytes"] == 110
    r = _invoke(["cache", "ls", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout.splitlines()[0])["key"] == "abc"
    r = _invoke(["cache", "ls"])                        # text: one line an entry on stdout, the count on stderr
    assert r.exit_code == 0 and r.stdout.startswith("key=abc") and len(r.stdout.splitlines()) == 1
    assert "1 entries" in r.stderr
    assert _invoke(["cache", "clear"]).exit_code == 0
    assert json.loads(_invoke(["cache", "size", "--json"]).stdout)["bytes"] == 0


def test_import_official_missing_files_exit_3(tmp_path: Path) -> None:
    r = _invoke(["weights", "import-official", str(tmp_path / "e.pth"), str(tmp_path / "m.pth"), str(tmp_path / "d.pth"),
                 "-o", str(tmp_path / "w.safetensors")])
    assert r.exit_code == 3 and "not found" in r.stderr
    assert not (tmp_path / "w.safetensors").exists()


def test_ctrl_c_in_process_exit_130(folder: Path, fake_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_engine("interrupt")
    monkeypatch.setenv("MAMBAST_FAKE_INTERRUPT_AFTER", "1")
    r = _invoke(["stylize", str(folder / "in"), "-s", str(folder / "style.png"), "-o", str(folder / "out"), "--batch-size", "1"])
    assert r.exit_code == 130 and "interrupted" in r.stderr
    assert len(list((folder / "out").iterdir())) == 1 and not _parts(folder)


def test_injected_oom_splits_and_completes(folder: Path, fake_engine: Any) -> None:
    fake_engine("oom")
    r = _invoke(["stylize", str(folder / "in"), "-s", str(folder / "style.png"), "-o", str(folder / "out"), "--batch-size", "3"])
    assert r.exit_code == 0, r.output
    assert len(list((folder / "out").iterdir())) == 3


@pytest.mark.slow
def test_real_engine_with_tiny_weights(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end through the real Engine on CPU with a tiny random model (checks the wiring, not the pictures)."""
    torch = pytest.importorskip("torch")
    try:
        from mambast_cli.model import MambaST, tiny_config
        from mambast_cli.model.weights import save_weights
    except ImportError as e:  # pragma: no cover - model layer not there yet
        pytest.skip(f"model layer missing: {e}")
    monkeypatch.delenv("MAMBAST_FAKE_ENGINE", raising=False)
    monkeypatch.setenv("MAMBAST_CACHE_DIR", str(folder / "cache"))
    torch.manual_seed(0)
    w = folder / "tiny.safetensors"
    save_weights(w, MambaST(tiny_config()), source="test: tiny random")
    args = ["stylize", str(folder / "in"), "-s", str(folder / "style.png"), "-o", str(folder / "out"), "--size", "32",
            "--weights", str(w), "--device", "cpu", "--json", "--format", "png"]
    r = _invoke(args)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["ok"] == 3
    first = {p.name: p.read_bytes() for p in (folder / "out").iterdir()}
    r = _invoke(args + ["--overwrite"])  # same seed → same bytes; the style now comes from the cache
    assert r.exit_code == 0
    assert {p.name: p.read_bytes() for p in (folder / "out").iterdir()} == first


def test_renderer_terminal_and_plain_modes() -> None:
    from rich.console import Console

    from mambast_cli.cli import _Renderer
    from mambast_cli.pipeline import Event, Report

    for terminal in (True, False):
        buf = io.StringIO()
        console = Console(file=buf, width=100, force_terminal=terminal)
        r = _Renderer(console, total=2, json_mode=False, quiet=False)
        r.plain_every = 0.0
        r(Event("ok", input="a.jpg", style="s.jpg", output="o/a__s.jpg", seconds=0.1))
        r(Event("error", input="b\nc.jpg", style="s.jpg", error="InputError", message="b\nc.jpg: empty file (0 bytes)"))
        r.summary(Report(planned=2, ok=1, failed=1, elapsed_s=1.0))
        import re

        text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buf.getvalue())
        assert "failed:" in text and "b\\nc.jpg" in text and "1 written" in text
        if not terminal:
            assert "stylize: 2/2 (1 failed)" in text


def test_workers_per_gpu(monkeypatch):
    """MAMBAST_WORKERS_PER_GPU puts several worker processes on one GPU; off by default (one process gives the same
    bytes every run), never on the CPU, and `auto` only for big runs on hosts with enough cores."""
    import torch

    from mambast_cli import cli
    from mambast_cli.errors import UsageError

    monkeypatch.delenv("MAMBAST_WORKERS_PER_GPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    from mambast_cli.pipeline import run as pipeline_run

    monkeypatch.setattr(pipeline_run, "usable_cpus", lambda: 16)   # the CPUs this process may use
    assert cli.auto_workers("auto", 1000) is None                # default: one process
    monkeypatch.setenv("MAMBAST_WORKERS_PER_GPU", "auto")
    assert cli.auto_workers("auto", 1000) == "0,0"
    assert cli.auto_workers("cuda:1", 1000) == "1,1"
    assert cli.auto_workers("auto", 10) is None                  # small run: one process starts faster
    assert cli.auto_workers("cpu", 1000) is None
    assert cli.auto_workers("cuda:7", 1000) is None               # bad index: the ordinary path reports it
    monkeypatch.setattr(pipeline_run, "usable_cpus", lambda: 4)
    assert cli.auto_workers("auto", 1000) is None                # too few cores to gain
    monkeypatch.setenv("MAMBAST_WORKERS_PER_GPU", "1")
    assert cli.auto_workers("auto", 1000) is None
    monkeypatch.setenv("MAMBAST_WORKERS_PER_GPU", "3")
    assert cli.auto_workers("auto", 5) == "0,0,0"
    monkeypatch.setenv("MAMBAST_WORKERS_PER_GPU", "many")
    with pytest.raises(UsageError):
        cli.auto_workers("auto", 5)
    monkeypatch.setenv("MAMBAST_WORKERS_PER_GPU", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.auto_workers("auto", 1000) is None
