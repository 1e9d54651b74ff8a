"""Robustness: a generated corpus of bad and odd inputs, hostile names, broken output folders, kill and Ctrl-C.

Runs the real CLI (CliRunner in-process, or a subprocess for signals) with the fake engine
(MAMBAST_FAKE_ENGINE, see mambast_cli/pipeline/fake.py). The tests run as root, so unreadable files are simulated
with FIFOs, directories and symlink loops rather than chmod.
"""
from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mambast_cli.cli import build_app

app = build_app()
REPO = Path(__file__).resolve().parents[1]


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")


def _bytes(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png16(w: int, h: int, channels: int = 3) -> bytes:
    """A 16-bit-per-sample RGB (3) or RGBA (4) PNG, written by hand: Pillow cannot save these."""
    a = (np.arange(w * h * channels, dtype=np.uint64).reshape(h, w, channels) * 997 % 65536).astype(">u2")
    if channels == 4:
        a[..., 3] = 40000
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if channels == 3 else 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _disp(name: str) -> str:
    """How the CLI prints a name on its one error line (control characters escaped)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in name)


def build_corpus(d: Path) -> dict[str, str]:
    """Write the corpus into ``d``; return {file name: "ok" | "error"} for every item the walk should pick up."""
    d.mkdir(parents=True)
    exp: dict[str, str] = {}

    def put(name: str, data: bytes, expect: str) -> None:
        (d / name).write_bytes(data)
        exp[name] = expect

    jpg = _bytes(_noise(64, 48, 1), "JPEG")
    png = _bytes(_noise(64, 48, 2), "PNG")
    put("zero.jpg", b"", "error")
    put("truncated.jpg", jpg[: len(jpg) // 2], "error")
    put("truncated.png", png[: len(png) // 2], "error")
    put("text.jpg", b"this is not a picture\n", "error")
    put("garbage.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20, "error")
    put("bomb.png", _bytes(Image.new("L", (1000, 1000)), "PNG"), "error")  # over --max-pixels 500000
    put("png_named.jpg", png, "ok")
    put("jpeg_named.png", jpg, "ok")
    put("no_extension_png", png, "ok")  # sniffed by content in the folder walk
    put("cmyk.jpg", _bytes(Image.new("CMYK", (20, 20), (0, 200, 200, 0)), "JPEG"), "ok")
    put("gray16.png", _bytes(Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100), "PNG"), "ok")
    put("rgb16.png", _png16(30, 20, 3), "ok")
    put("rgba16.png", _png16(30, 20, 4), "ok")
    put("gray.jpg", _bytes(Image.new("L", (30, 20), 128), "JPEG"), "ok")
    put("bilevel.png", _bytes(Image.new("1", (30, 20), 1), "PNG"), "ok")
    pal = Image.new("P", (30, 20), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    put("palette_transparent.png", _bytes(pal, "PNG", transparency=1), "ok")
    put("palette.gif", _bytes(pal, "GIF"), "ok")
    put("rgba.png", _bytes(Image.new("RGBA", (30, 20), (255, 0, 0, 128)), "PNG"), "ok")
    put("la.png", _bytes(Image.new("LA", (30, 20), (100, 50)), "PNG"), "ok")
    exif = Image.Exif()
    exif[0x0112] = 6
    asym = Image.new("RGB", (40, 20), (0, 0, 255))
    asym.paste((255, 0, 0), (0, 0, 20, 20))
    put("exif_rotated.jpg", _bytes(asym, "JPEG", exif=exif.tobytes(), quality=95), "ok")
    put("one_pixel.png", _bytes(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "ok")
    put("seven_by_five.png", _bytes(_noise(7, 5), "PNG"), "ok")
    put("thin_strip.png", _bytes(_noise(300, 2), "PNG"), "ok")
    frames = [Image.new("RGB", (16, 16), c) for c in ((250, 0, 0), (0, 250, 0))]
    put("animated.gif", _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0), "ok")
    put("animated.webp", _bytes(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=40), "ok")
    put("still.webp", _bytes(_noise(30, 20), "WEBP"), "ok")
    put("bitmap.bmp", _bytes(_noise(30, 20), "BMP"), "ok")
    put("scan.tif", _bytes(_noise(30, 20), "TIFF"), "ok")
    put("with spaces.jpg", jpg, "ok")
    put("ünïcødé 画像.png", png, "ok")
    put("new\nline.jpg", jpg, "ok")
    put("dup.jpg", jpg, "ok")
    put("dup.png", png, "ok")  # collides with dup.jpg → de-duplicated name
    os.mkfifo(d / "fifo.jpg")
    exp["fifo.jpg"] = "error"
    (d / "loop_a.jpg").symlink_to(d / "loop_b.jpg")
    (d / "loop_b.jpg").symlink_to(d / "loop_a.jpg")
    exp["loop_a.jpg"] = exp["loop_b.jpg"] = "error"
    (d / "broken_link.jpg").symlink_to(d / "does_not_exist.jpg")
    exp["broken_link.jpg"] = "error"
    put("unreadable.jpg", jpg, "ok")
    (d / "unreadable.jpg").chmod(0)
    if not os.access(d / "unreadable.jpg", os.R_OK):  # not root: a real permission error
        exp["unreadable.jpg"] = "error"
    (d / "folder_named.jpg").mkdir()  # walked as a folder: contributes nothing
    (d / "README.txt").write_text("not an image, not picked up")
    (d / ".hidden.jpg").write_bytes(jpg)  # hidden: not picked up
    return exp


def test_corpus(tmp_path: Path, fake_engine: Any) -> None:
    corpus = tmp_path / "corpus"
    exp = build_corpus(corpus)
    assert len(exp) >= 30
    good = tmp_path / "good_style.png"
    good.write_bytes(_bytes(Image.new("RGB", (24, 24), (0, 0, 255)), "PNG"))
    bad = tmp_path / "bad_style.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 broken style")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["stylize", str(corpus), "-s", str(good), "-s", str(bad), "-o", str(out), "--json",
                                 "--size", "32", "--max-pixels", "500000", "--format", "png"])
    assert r.exit_code == 1, r.output
    events = [json.loads(line) for line in r.stdout.splitlines()]  # stdout is pure NDJSON
    items = [e for e in events if e["event"] in ("ok", "error") and e.get("input")]
    got: dict[tuple[str, str], str] = {(os.path.basename(e["input"]), os.path.basename(e["style"])): e["event"] for e in items}
    for name, expect in exp.items():
        assert got.get((name, "good_style.png")) == expect, name
        assert got.get((name, "bad_style.jpg")) == "error", name  # a corrupt style fails only its own items
    summary = events[-1]
    assert summary["event"] == "summary"
    n_ok = sum(v == "ok" for v in exp.values())
    assert summary["ok"] == n_ok and summary["failed"] == 2 * len(exp) - n_ok
    # every failure is one stderr line naming the file
    fails = [line for line in r.stderr.splitlines() if line.startswith("failed:")]
    assert len(fails) == summary["failed"]
    for name, expect in exp.items():  # ... and gives a reason after the name
        for style in ("good_style.png",) * (expect == "error") + ("bad_style.jpg",):
            [line] = [f for f in fails if f"/{_disp(name)} × {style}: " in f]
            assert len(line.split(f" × {style}: ", 1)[1]) > 5, line
    # outputs: all decodable, no temporaries, no newline in names, de-duplicated collision, upright EXIF picture
    outs = list(out.iterdir())
    assert len(outs) == n_ok and not [p for p in outs if ".part-" in p.name]
    assert all("\n" not in p.name for p in outs)
    for p in outs:
        Image.open(p).load()
    names = {p.name for p in outs}
    assert {"dup__good_style.png", "dup__good_style_2.png", "new_line__good_style.png"} <= names
    rot = Image.open(out / "exif_rotated__good_style.png")
    assert rot.height > rot.width  # EXIF orientation applied: the 40×20 landscape is displayed as portrait
    assert not (out / "bomb__good_style.png").exists()
    bomb = [e for e in items if e["input"].endswith("bomb.png") and e["style"].endswith("good_style.png")][0]
    assert "over the limit" in bomb["message"] and "--max-pixels" in bomb["hint"]


def test_input_inside_output_is_never_overwritten(tmp_path: Path, make_image: Any, fake_engine: Any) -> None:
    out = tmp_path / "out"
    mine = make_image("out/mine.jpg")
    before = mine.read_bytes()
    make_image("in/a.jpg")
    s = make_image("s.png")
    r = CliRunner().invoke(app, ["stylize", str(tmp_path / "in"), str(mine), str(out), "-s", str(s), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert mine.read_bytes() == before
    assert "inside the output folder" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a__s.jpg", "mine.jpg"]


def test_hostile_style_and_input_names_stay_inside(tmp_path: Path, make_image: Any, fake_engine: Any) -> None:
    s = make_image("..style..png")
    a = make_image("in/-rf ..jpg")
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["stylize", str(a), "-s", str(s), "-o", str(out)])
    assert r.exit_code == 0, r.output
    [p] = list(out.iterdir())
    assert p.parent == out and not p.name.startswith(".")


def _default_sigint() -> None:
    # A test run started in the background (nohup ... &, some CI runners) inherits SIGINT *ignored*, and so would the
    # CLI (Python then never raises KeyboardInterrupt): give the child the default disposition, as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mambast_cli", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint)


def _wait_for_outputs(out: Path, n: int, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if out.is_dir() and len([p for p in out.iterdir() if not p.name.startswith(".")]) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for outputs")


N_SLOW = 12   # pictures in the slow run: 3 s at 0.25 s each, far longer than the wait for the first outputs


@pytest.fixture
def slow_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, MAMBAST_FAKE_ENGINE="slow", MAMBAST_FAKE_DELAY="0.25", PYTHONPATH=str(REPO))
    src = tmp_path / "in"
    src.mkdir()
    for i in range(N_SLOW):
        _noise(24, 16, i).save(src / f"{i:02d}.jpg")
    Image.new("RGB", (16, 16), (0, 0, 200)).save(tmp_path / "s.png")
    return env


@pytest.mark.slow
def test_sigkill_then_rerun_finishes_only_the_rest(tmp_path: Path, slow_env: dict[str, str]) -> None:
    out = tmp_path / "out"
    args = ("stylize", str(tmp_path / "in"), "-s", str(tmp_path / "s.png"), "-o", str(out), "--batch-size", "1", "--size", "16")
    proc = _cli(*args, env=slow_env)
    _wait_for_outputs(out, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert 3 <= len(finished) < N_SLOW
    for name in finished:
        Image.open(out / name).load()  # complete pictures only
    fast = dict(slow_env, MAMBAST_FAKE_ENGINE="1")
    proc = _cli(*args, "--json", env=fast)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    summary = events[-1]
    assert summary["skipped"] == len(finished) and summary["ok"] == N_SLOW - len(finished)
    assert len([p for p in out.iterdir()]) == N_SLOW  # every output there, stale temporaries cleaned up


@pytest.mark.parametrize("sig, code", [pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow),
                                       (signal.SIGTERM, 143)], ids=["ctrl_c", "sigterm"])
def test_interrupt_exits_without_partial_files(tmp_path: Path, slow_env: dict[str, str], sig: int, code: int) -> None:
    """Ctrl-C, and SIGTERM (kill, a scheduler's timeout; it used to kill the process on the spot: no summary,
    temporaries until the next run), are a clean stop: summary printed, finished outputs kept, no temporary files
    left, exit 130 / 143."""
    out = tmp_path / "out"
    proc = _cli("stylize", str(tmp_path / "in"), "-s", str(tmp_path / "s.png"), "-o", str(out), "--batch-size", "1",
                "--size", "16", "--json", env=slow_env)
    _wait_for_outputs(out, 2, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    summary = json.loads(stdout.splitlines()[-1])
    assert summary["event"] == "summary" and summary["interrupted"] and summary["exit_code"] == code
    assert "interrupted" in stderr
    names = [p.name for p in out.iterdir()]
    assert not [n for n in names if ".part-" in n] and 2 <= len(names) < N_SLOW
    assert summary["ok"] == len(names)


# -- tiny pictures, through the real engine --------------------------------------------------------------------
@pytest.fixture
def tiny_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny random model saved as a mambast weights file; the real Engine is selected (no fake)."""
    import torch

    from mambast_cli.model import MambaST, tiny_config
    from mambast_cli.model.weights import save_weights

    monkeypatch.delenv("MAMBAST_FAKE_ENGINE", raising=False)
    monkeypatch.setenv("MAMBAST_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    w = tmp_path / "tiny.safetensors"
    save_weights(w, MambaST(tiny_config()), source="test: tiny random")
    return w


def test_tiny_pictures_work_at_their_own_size(tmp_path: Path, tiny_weights: Path) -> None:
    """1×1 and 7×5 contents (and a 1×1 style) go through the real model unscaled: it pads them itself."""
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(src / "one.png")
    _noise(7, 5).save(src / "seven.png")
    Image.new("RGB", (1, 1), (0, 0, 255)).save(tmp_path / "dot.png")
    _noise(12, 12, 3).save(tmp_path / "s.png")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["stylize", str(src), "-s", str(tmp_path / "s.png"), "-s", str(tmp_path / "dot.png"),
                                 "-o", str(out), "--size", "0", "--format", "png", "--weights", str(tiny_weights),
                                 "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    sizes = {p.name: Image.open(p).size for p in out.iterdir()}
    assert sizes == {"one__s.png": (1, 1), "seven__s.png": (7, 5), "one__dot.png": (1, 1), "seven__dot.png": (7, 5)}


# -- output folder not writable ------------------------------------------------------------------------------------
def test_output_folder_not_writable_stops_at_once(tmp_path: Path, make_image: Any, fake_engine: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    for i in range(3):
        make_image(f"in/{i}.jpg")
    s = make_image("s.png")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    if os.access(out, os.W_OK):  # root ignores the mode: refuse creations inside it instead
        real_open = os.open

        def denied(path: Any, flags: int, *a: Any, **k: Any) -> int:
            if str(path).startswith(str(out) + os.sep) and flags & os.O_CREAT:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(os, "open", denied)
    r = CliRunner().invoke(app, ["stylize", str(tmp_path / "in"), "-s", str(s), "-o", str(out), "--json"])
    out.chmod(0o755)
    assert r.exit_code == 3, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith(("error:", "failed:"))]
    assert len(errors) == 1 and str(out) in errors[0] and "Permission denied" in errors[0] and "hint" in errors[0]
    assert json.loads(r.stdout.splitlines()[-1])["event"] == "fatal"
    assert list(out.iterdir()) == []


def test_a_path_blocked_for_one_output_fails_only_that_output(tmp_path: Path, make_image: Any, fake_engine: Any) -> None:
    for name in ("a.jpg", "b.jpg", "sub/c.jpg", "sub/d.jpg"):
        make_image(f"in/{name}")
    s = make_image("s.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_bytes(b"a stray file where the mirrored sub-folder goes")
    (out / "b__s.jpg").mkdir()  # a folder at an output's name (redone with --overwrite)
    r = CliRunner().invoke(app, ["stylize", str(tmp_path / "in"), "-s", str(s), "-o", str(out), "--overwrite",
                                 "--json"])
    assert r.exit_code == 1, r.output
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[-1]["event"] == "summary" and events[-1]["ok"] == 1 and events[-1]["failed"] == 3
    assert (out / "a__s.jpg").is_file() and (out / "b__s.jpg").is_dir()
    fails = [line for line in r.stderr.splitlines() if line.startswith("failed:")]
    assert len(fails) == 3 and sum("a file is in the way" in f for f in fails) == 2
    assert not [p for p in out.rglob("*") if ".part-" in p.name]


# -- unsafe checkpoints ----------------------------------------------------------------------------------------------
class _Mkdir:
    """A pickle payload: unpickling it creates a folder (proves code ran)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.path,))


def test_pickle_checkpoints_are_refused_without_running_code(tmp_path: Path, make_image: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv("MAMBAST_FAKE_ENGINE", raising=False)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"proj.weight": torch.zeros(1), "x": _Mkdir(marker)}, evil)
    a, s = make_image("a.jpg"), make_image("s.png")
    r = CliRunner().invoke(app, ["stylize", str(a), "-s", str(s), "-o", str(tmp_path / "out"), "--weights", str(evil),
                                 "--device", "cpu"])
    assert r.exit_code == 3 and "evil.pth" in r.stderr and "import-official" in r.stderr, r.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    w = tmp_path / "w.safetensors"
    r = CliRunner().invoke(app, ["weights", "import-official", str(evil), str(evil), str(evil), "-o", str(w)])
    assert r.exit_code == 3 and "refused" in r.stderr and "evil.pth" in r.stderr, r.output
    assert not marker.exists() and not w.exists()


def test_bundled_weights_match_their_recorded_sha256() -> None:
    from mambast_cli.model.weights import default_weights_path, load_weights, weights_id

    path = default_weights_path()
    assert path is not None, "the trained default weights must be bundled"
    _, sd, meta = load_weights(path, verify=True)  # raises WeightsError on a mismatch
    assert meta["sha256"] == weights_id(path) and len(meta["sha256"]) == 64 and sd


# -- shell pipelines (real processes, real pipes) ---------------------------------------------------------------------
@pytest.mark.slow
def test_shell_pipelines(tmp_path: Path) -> None:
    env = dict(os.environ, MAMBAST_FAKE_ENGINE="1", PYTHONPATH=str(REPO))
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i, name in enumerate(("a.jpg", "sub/b c.jpg", "sub/new\nline.jpg")):
        _noise(24, 16, i).save(src / name)
    (src / "notes.txt").write_text("ignored by find")
    Image.new("RGB", (16, 16), (0, 0, 200)).save(tmp_path / "art.png")
    mb = f"{sys.executable} -m mambast_cli stylize"

    def sh(cmd: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], cwd=tmp_path, env=env, capture_output=True,
                              timeout=120)

    # paths on stdin, one per line (the name with a newline cannot be listed this way: find prints it on two lines)
    r = sh(f"find in -name '*.jpg' ! -name '*line*' | {mb} - --style art.png -o out/ --size 16")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b""  # without --json stdout stays clean
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.jpg")) == ["a__art.jpg", "b c__art.jpg"]
    # NUL-separated, with --json: stdout is only NDJSON events and a final summary
    r = sh(f"find in -name '*.jpg' -print0 | {mb} - -0 --style art.png -o out0/ --size 16 --json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [e["event"] for e in events] == ["ok"] * 3 + ["summary"] and events[-1]["ok"] == 3
    assert "3 written" in r.stderr.decode()
    # image bytes on stdin → image bytes on stdout (no -q: human output must stay on stderr)
    r = sh(f"cat in/a.jpg | {mb} - --style art.png -o - --format png --size 0 > piped.png")
    assert r.returncode == 0, r.stderr
    data = (tmp_path / "piped.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")  # exactly one PNG, nothing else
    assert Image.open(tmp_path / "piped.png").size == (24, 16) and "1 written" in r.stderr.decode()


def test_bad_picture_on_stdin_leaves_stdout_empty(tmp_path: Path, make_image: Any, fake_engine: Any) -> None:
    s = make_image("art.png")
    r = CliRunner().invoke(app, ["stylize", "-", "-s", str(s), "-o", "-"], input=b"\xff\xd8\xff\xe0 not really")
    assert r.exit_code == 1 and r.stdout_bytes == b""
    [line] = [x for x in r.stderr.splitlines() if x.startswith("failed:")]
    assert line.startswith("failed: <stdin> × art.png: ") and ("corrupt" in line or "cannot read" in line), line


def test_every_input_inside_the_output_folder_is_a_usage_error(tmp_path: Path, make_image: Any, fake_engine: Any) -> None:
    """`cd photos && mambast stylize a.jpg -o .`: nothing could be written (inputs inside the output folder are never
    stylised), which used to end "0 written, 1 skipped" with exit 0; now one error line and exit 2."""
    a = make_image("in/a.jpg")
    s = make_image("s.png")
    for args in (["stylize", str(a), "-s", str(s), "-o", str(tmp_path / "in")],
                 ["stylize", str(tmp_path / "in"), "-s", str(s), "-o", str(tmp_path / "in")]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, r.output
        assert "every input is inside the output folder" in r.stderr and len(r.stderr.strip().splitlines()) <= 2
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.jpg"]
