"""Tests for `mambast video` (mambast_cli/video/): small videos made with PyAV here, a tiny random model on CPU."""
from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

av = pytest.importorskip("av")
torch = pytest.importorskip("torch")
typer = pytest.importorskip("typer")
from typer.testing import CliRunner  # noqa: E402

from mambast_cli.video import VideoOptions, run_videos  # noqa: E402
from mambast_cli.video import io as vio  # noqa: E402
from mambast_cli.video.stability import (  # noqa: E402
    TemporalSmoother, compensated_diff, flicker_ratio, pan_scene, static_scene,
)

TB = Fraction(1, 1000)


def make_video(path: Path, *, w: int = 48, h: int = 32, n: int = 16, vfr: bool = False, rotation: int = 0,
               audio: bool = True, pix_fmt: str = "yuv420p", fps: int = 25, color_range: int = 0,
               colorspace: int = 2) -> list[float]:
    """Write a small H.264 (+AAC) video; returns the frame times in seconds."""
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
    vs.codec_context.time_base = TB
    vs.time_base = TB
    vs.codec_context.options = {"preset": "ultrafast", "crf": "20"}
    if color_range:
        vs.codec_context.color_range = color_range
    if colorspace != 2:
        vs.codec_context.colorspace = colorspace
    if rotation:
        vs.set_display_rotation(rotation)
    a = None
    if audio:
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
    t, times = 0, []
    step = 1000 // fps
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.stack([(xx * 5 + i * 7) % 256, (yy * 7) % 256, np.full_like(xx, 80 + i * 4)], -1).astype(np.uint8)
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = t
        times.append(t / 1000)
        t += step * (2 if vfr and i % 3 == 2 else 1)
        for p in vs.encode(f):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    if a is not None:
        total, pos = int(16 * t), 0
        while pos < total:
            k = 1024
            fr = av.AudioFrame.from_ndarray((np.sin(np.arange(pos, pos + k) / 7.0) * 0.3).astype(np.float32)[None],
                                            format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, pos
            pos += k
            for p in a.encode(fr):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    out.close()
    return times


def video_facts(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [(float(f.time), f.width, f.height, f.rotation) for f in c.decode(v)]
        cc = v.codec_context
        facts = {"times": [f[0] for f in frames], "size": (frames[0][1], frames[0][2]), "rotation": frames[0][3],
                 "color_range": cc.color_range, "colorspace": cc.colorspace}
    with av.open(str(path)) as c:
        facts["audio"] = [bytes(p) for p in c.demux(c.streams.audio)] if c.streams.audio else []
        facts["audio"] = [b for b in facts["audio"] if b]
        facts["audio_pts"] = []
    return facts


def audio_packets(path: Path) -> list[tuple[bytes, float]]:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [(bytes(p), float(p.pts * p.time_base)) for p in c.demux(c.streams.audio[0]) if p.size]


@pytest.fixture(scope="module")
def engine():
    from mambast_cli.engine import Engine
    from mambast_cli.model import MambaST, tiny_config

    torch.manual_seed(0)
    return Engine(model=MambaST(tiny_config()), device="cpu", disk_cache=False)


@pytest.fixture()
def style(tmp_path: Path) -> str:
    from PIL import Image

    p = tmp_path / "art.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(p)
    return str(p)


def no_temp_left(folder: Path) -> bool:
    return not [p for p in os.listdir(folder) if ".part-" in p]


# ------------------------------------------------------------------------------------------------ the job
def test_vfr_rotation_odd_size_audio(tmp_path: Path, engine, style: str) -> None:
    src = tmp_path / "clip.mp4"
    times = make_video(src, w=47, h=33, n=14, vfr=True, rotation=90, pix_fmt="yuv444p")
    out = tmp_path / "out" / "styled.mp4"
    rep = run_videos([src], style, engine, VideoOptions(output=str(out)))
    assert rep.ok and rep.items[0].status == "done" and rep.items[0].frames == 14
    f = video_facts(out)
    assert len(f["times"]) == 14
    assert np.allclose(f["times"], times, atol=1e-3)          # VFR timestamps kept
    assert f["size"] == (32, 46)                              # upright 33x47, odd → cropped 1 px for yuv420p
    assert f["rotation"] == 0                                 # frames are upright, no tag
    assert audio_packets(out) == audio_packets(src) and audio_packets(src)   # audio remuxed byte for byte
    assert no_temp_left(out.parent)
    t = rep.items[0].timing                                   # where the time went, for bench_video.py
    main_waits = ("read_wait_s", "buffer_wait_s", "stack_s", "writer_wait_s", "packet_wait_s")
    assert set(main_waits) | {"decode_s", "stylize_s", "gpu_wait_s", "encode_s", "wall_s"} <= set(t)
    assert all(t[k] >= 0 for k in t) and t["buffer_wait_s"] + t["stack_s"] <= t["stylize_s"] <= t["wall_s"]
    assert t["read_wait_s"] + t["stylize_s"] + t["writer_wait_s"] + t["packet_wait_s"] <= t["wall_s"]
    assert 0 < t["first_launch_s"] <= t["wall_s"]              # host side: when the first batch was queued
    assert "gpu_busy_s" not in t                              # the GPU timeline needs CUDA events


def test_audio_packets_do_not_hold_back_the_next_batches(tmp_path: Path, engine, style: str, monkeypatch) -> None:
    """While the encode thread is busy with a batch, the main thread goes on stylising the next ones even with audio
    packets between them: packets and batches wait in separate slots. (Session 8: in one 4-item queue, ~25 audio
    packets per batch took the slots, the main thread stalled behind them and a 1080p job left the GPU idle a third
    of the time.)"""
    import threading

    from mambast_cli.video import run as vrun

    src = tmp_path / "clip.mp4"
    make_video(src, w=32, h=32, n=64)                         # ~40 audio packets between 16 batches of 4
    stylized = threading.Semaphore(0)

    class CountingEngine:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def stylize(self, *a: Any, **k: Any) -> Any:
            y = self.inner.stylize(*a, **k)
            stylized.release()
            return y

    reached: list[bool] = []
    real_make_writer = vrun.make_writer

    def make_writer(*a: Any, **k: Any) -> Any:
        w = real_make_writer(*a, **k)
        first = {"blocked": False}

        def held(write):
            def wrapped(*wa: Any, **wk: Any) -> Any:
                if not first["blocked"]:          # the first frame: wait until 1 + _OUT_BATCHES batches ran
                    first["blocked"] = True
                    reached.append(all(stylized.acquire(timeout=10) for _ in range(vrun._OUT_BATCHES + 1)))
                return write(*wa, **wk)
            return wrapped

        for name in ("write", "write_yuv420"):
            if hasattr(w, name):
                setattr(w, name, held(getattr(w, name)))
        return w

    monkeypatch.setattr(vrun, "make_writer", make_writer)
    out = tmp_path / "out.mp4"
    rep = run_videos([src], style, CountingEngine(engine), VideoOptions(output=str(out), batch=4))
    assert rep.ok and rep.items[0].frames == 64
    assert reached == [True]
    assert audio_packets(out) == audio_packets(src) and len(audio_packets(src)) > 20


def test_start_duration_shifts_all_streams(tmp_path: Path, engine, style: str) -> None:
    src = tmp_path / "c.mp4"
    make_video(src, n=30)                                     # 25 fps, 1.2 s
    out = tmp_path / "cut.mkv"
    rep = run_videos([src], style, engine, VideoOptions(output=str(out), start=0.4, duration=0.4))
    assert rep.ok
    f = video_facts(out)
    assert len(f["times"]) == 10 and f["times"][0] == pytest.approx(0.0, abs=1e-3)
    assert f["times"][-1] == pytest.approx(0.36, abs=2e-3)
    a_in, a_out = audio_packets(src), audio_packets(out)
    assert a_out and {b for b, _ in a_out} <= {b for b, _ in a_in}
    assert min(t for _, t in a_out) >= -0.07 and max(t for _, t in a_out) < 0.45


def test_image_sequence_keeps_exact_size(tmp_path: Path, engine, style: str) -> None:
    src = tmp_path / "odd.mp4"
    make_video(src, w=47, h=33, n=6, pix_fmt="yuv444p", audio=False)
    pattern = tmp_path / "frames" / "%04d.png"
    rep = run_videos([src], style, engine, VideoOptions(output=str(pattern)))
    assert rep.ok
    files = sorted(os.listdir(tmp_path / "frames"))
    assert files == [f"{i:04d}.png" for i in range(1, 7)]
    from PIL import Image

    assert Image.open(tmp_path / "frames" / "0001.png").size == (47, 33)


def test_rerun_removes_temporaries_of_a_killed_run(tmp_path: Path, engine, style: str) -> None:
    """A killed run leaves a hidden frame folder (image sequence) or a hidden .part file (video file) behind; the next
    run over the same outputs removes them once their process is gone."""
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    src = tmp_path / "v.mp4"
    make_video(src, w=32, h=24, n=4, audio=False)
    frames = tmp_path / "frames"
    frames.mkdir()
    stale_dir = frames / f".mambast-frames.part-{dead}-00c0ffee"
    stale_dir.mkdir()
    (stale_dir / "0001.png").write_bytes(b"partial")
    stale_file = tmp_path / f".o.mp4.part-{dead}-00c0ffee"
    stale_file.write_bytes(b"partial")
    assert run_videos([src], style, engine, VideoOptions(output=str(frames / "%04d.png"))).ok
    assert run_videos([src], style, engine, VideoOptions(output=str(tmp_path / "o.mp4"))).ok
    assert not stale_dir.exists() and not stale_file.exists()
    assert sorted(os.listdir(frames)) == [f"{i:04d}.png" for i in range(1, 5)]


def test_size_option_and_colour_tags(tmp_path: Path, engine, style: str) -> None:
    src = tmp_path / "full.mp4"
    make_video(src, w=64, h=48, n=5, audio=False, pix_fmt="yuvj420p", color_range=2, colorspace=1)
    out = tmp_path / "small.mp4"
    rep = run_videos([src], style, engine, VideoOptions(output=str(out), size=24))
    assert rep.ok
    f = video_facts(out)
    assert f["size"] == (32, 24)
    assert f["color_range"] == 2 and f["colorspace"] == 1


def test_corrupt_and_truncated_inputs_fail_cleanly(tmp_path: Path, engine, style: str) -> None:
    good = tmp_path / "in" / "good.mp4"
    good.parent.mkdir()
    make_video(good, n=8)
    (tmp_path / "in" / "garbage.mp4").write_bytes(os.urandom(4000))
    data = good.read_bytes()
    (tmp_path / "in" / "cut.mp4").write_bytes(data[: len(data) // 2])          # moov at the end: unreadable
    # faststart copy (index first), then cut: the demuxer would stop silently
    fs = tmp_path / "fs.mp4"
    run_videos([good], style, engine, VideoOptions(output=str(fs)))
    d2 = fs.read_bytes()
    (tmp_path / "in" / "cut_fast.mp4").write_bytes(d2[: int(len(d2) * 0.7)])
    outdir = tmp_path / "out"
    rep = run_videos([tmp_path / "in"], style, engine, VideoOptions(output=str(outdir)))
    status = {Path(i.input).name: i for i in rep.items}
    assert status["good.mp4"].status == "done"
    for bad in ("garbage.mp4", "cut.mp4", "cut_fast.mp4"):
        assert status[bad].status == "failed" and "\n" not in status[bad].message
    assert "truncated" in status["cut_fast.mp4"].message
    assert not rep.ok
    assert sorted(os.listdir(outdir)) == ["good__art.mp4"]                    # no partial output, no temp file


def test_plan_rules(tmp_path: Path) -> None:
    from mambast_cli.errors import UsageError
    from mambast_cli.video.run import plan_jobs

    a, b = str(tmp_path / "x" / "a.mp4"), str(tmp_path / "y" / "a.mp4")
    jobs = plan_jobs([a, b], "s/art.jpg", VideoOptions(output=str(tmp_path / "o")))
    assert [Path(j.output).name for j in jobs] == ["a__art.mp4", "a__art_2.mp4"]
    assert plan_jobs([a], "art.jpg", VideoOptions())[0].output == str(tmp_path / "x" / "a__art.mp4")
    assert plan_jobs([a], "art.jpg", VideoOptions(codec="ffv1", output=str(tmp_path)))[0].output.endswith(".mkv")
    with pytest.raises(UsageError):
        plan_jobs([a, b], "art.jpg", VideoOptions(output="f/%06d.png"))
    assert plan_jobs([a, b], "art.jpg", VideoOptions(output="f/{stem}/%06d.png"))[0].sequence
    with pytest.raises(UsageError):
        plan_jobs([a], "art.jpg", VideoOptions(output=str(tmp_path / "o.xyz")))


def test_folder_expansion_skips_earlier_outputs_next_to_their_inputs(tmp_path: Path) -> None:
    from mambast_cli.video.run import expand_inputs

    d = tmp_path / "shots"
    d.mkdir()
    for name in ("a.mp4", "a__art.mp4", "a__art__art.mkv", "a__wave_2.mp4", "b__c.mp4", "notes.txt"):
        (d / name).write_bytes(b"x")
    # outputs of any style are outputs; b__c.mp4 has no b.* beside it, so it is a video of its own
    assert [os.path.basename(f) for f in expand_inputs([str(d)])] == ["a.mp4", "b__c.mp4"]
    assert expand_inputs([str(d / "a__art.mp4")]) == [str(d / "a__art.mp4")]  # a file you name is always tried


# ------------------------------------------------------------------------------------------------ the command
def _app(engine, monkeypatch) -> typer.Typer:
    import mambast_cli.pipeline as pipeline
    from mambast_cli.video.cli import video_command

    monkeypatch.setattr(pipeline, "engine_factory", lambda **kw: engine)
    app = typer.Typer()
    app.command("video")(video_command)
    app.command("other")(lambda: None)
    return app


def test_cli_exit_codes_json_and_skip(tmp_path: Path, engine, style: str, monkeypatch) -> None:
    app = _app(engine, monkeypatch)
    runner = CliRunner()
    src = tmp_path / "v.mp4"
    make_video(src, n=6, audio=False)
    out = tmp_path / "o.mp4"
    r = runner.invoke(app, ["video", str(src), "--style", style, "-o", str(out), "--json", "--no-smooth"])
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert "start" in kinds and "done" in kinds and kinds[-1] == "summary"
    mtime = out.stat().st_mtime_ns
    r = runner.invoke(app, ["video", str(src), "--style", style, "-o", str(out)])          # exists → skipped
    assert r.exit_code == 0 and out.stat().st_mtime_ns == mtime
    r = runner.invoke(app, ["video", str(src), "--style", style, "-o", str(out), "--overwrite", "--smooth", "3"])
    assert r.exit_code == 0 and out.stat().st_mtime_ns != mtime
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    r = runner.invoke(app, ["video", str(bad), "--style", style, "-o", str(tmp_path / "bad_out.mp4")])
    assert r.exit_code == 1 and not (tmp_path / "bad_out.mp4").exists()
    r = runner.invoke(app, ["video", str(src), "--style", style, "-o", str(tmp_path / "x.xyz")])
    assert r.exit_code == 2
    r = runner.invoke(app, ["video", str(src), "--style", style, "--codec", "nosuchcodec", "-o", str(tmp_path / "y.mp4")])
    assert r.exit_code == 2
    before = src.read_bytes()
    for extra in ([], ["--overwrite"]):    # -o the input itself: a usage error (it used to be "1 skipped", exit 0)
        r = runner.invoke(app, ["video", str(src), "--style", style, "-o", str(src), *extra])
        assert r.exit_code == 2 and "is the input itself" in r.stderr and src.read_bytes() == before, r.output
    assert no_temp_left(tmp_path)


def interrupted_video_job(tmp_path: Path, engine, style: str, monkeypatch) -> tuple[Any, int]:
    """`mambast video` on a 12-frame clip, batches of 2, with Ctrl-C raised in the second engine call: (the CLI
    result, how many engine calls were made)."""
    calls = {"n": 0}

    class Boom:
        def __getattr__(self, name):
            return getattr(engine, name)

        def stylize(self, *a, **k):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return engine.stylize(*a, **k)

    app = _app(Boom(), monkeypatch)
    src = tmp_path / "v.mp4"
    make_video(src, n=12)
    r = CliRunner().invoke(app, ["video", str(src), "--style", style, "-o", str(tmp_path / "o.mp4"), "--batch-size", "2"])
    return r, calls["n"]


def test_cli_interrupt_leaves_nothing(tmp_path: Path, engine, style: str, monkeypatch) -> None:
    r, _ = interrupted_video_job(tmp_path, engine, style, monkeypatch)
    assert r.exit_code == 130
    assert not (tmp_path / "o.mp4").exists() and no_temp_left(tmp_path)


# ------------------------------------------------------------------------------------------------ stability
def test_smoother_steadies_static_and_passes_motion() -> None:
    sc = static_scene(frames=10, height=36, width=64, noise=0.03)
    noisy_out = sc.frames + 0.05 * torch.randn(sc.frames.shape, generator=torch.Generator().manual_seed(1))
    sm = TemporalSmoother(4)
    smoothed = torch.cat([sm(sc.frames[i:i + 3], noisy_out[i:i + 3]) for i in range(0, 10, 3)])
    assert flicker_ratio(sc.frames, smoothed) < 0.6 * flicker_ratio(sc.frames, noisy_out)
    # a cut: the new frame passes through unchanged
    sm.reset()
    a, b = torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16)
    sm(a, a)
    assert torch.allclose(sm(b, b), b)
    assert TemporalSmoother(0)(a, b) is b


def test_pan_metric_sees_motion_compensation() -> None:
    sc = pan_scene(frames=6, height=32, width=48, speed=2, noise=0.0)
    assert compensated_diff(sc.frames, sc.dx) < 1e-6 < flicker_ratio(sc.frames, sc.frames) + 1


def test_default_preset_keeps_up_with_the_gpu() -> None:
    import inspect

    from mambast_cli.video.cli import video_command

    assert VideoOptions().preset == "veryfast"                 # medium capped 1080p near 21 fps on 16 cores
    assert inspect.signature(video_command).parameters["preset"].default == "veryfast"
    assert inspect.signature(vio.VideoWriter.__init__).parameters["preset"].default == "veryfast"
