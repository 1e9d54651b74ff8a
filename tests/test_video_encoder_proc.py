"""The opt-in encoder process (MAMBAST_VIDEO_ENCODER=process, mambast_cli/video/encoder_proc.py): same output as the
encode thread, errors relayed as one-line errors, nothing left behind on abort or when the parent is killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("torch")

from mambast_cli.errors import OutputError  # noqa: E402
from mambast_cli.video import VideoOptions, run_videos  # noqa: E402
from mambast_cli.video import io as vio  # noqa: E402
from mambast_cli.video.encoder_proc import ProcessVideoWriter, encoder_mode, make_writer  # noqa: E402

from tests.test_video import audio_packets, engine, make_video, no_temp_left, style, video_facts  # noqa: E402,F401


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def test_mode_switch(monkeypatch) -> None:
    monkeypatch.delenv("MAMBAST_VIDEO_ENCODER", raising=False)
    assert encoder_mode() == "thread"
    monkeypatch.setenv("MAMBAST_VIDEO_ENCODER", "process")
    assert encoder_mode() == "process"


def job_in_both_modes(tmp_path: Path, engine, style: str, monkeypatch, env: str) -> tuple[Path, list, dict]:  # noqa: F811
    """One VFR, rotated, odd-sized clip with audio through the video job with `env` = thread, then = process:
    (source, its frame times, {mode: output}); both jobs complete and leave no temporaries."""
    src = tmp_path / "clip.mp4"
    times = make_video(src, w=47, h=33, n=14, vfr=True, rotation=90, pix_fmt="yuv444p")
    outs = {}
    for mode in ("thread", "process"):
        monkeypatch.setenv(env, mode)
        outs[mode] = tmp_path / mode / "styled.mp4"
        rep = run_videos([src], style, engine, VideoOptions(output=str(outs[mode])))
        assert rep.ok and rep.items[0].frames == 14, rep
        assert no_temp_left(outs[mode].parent)
    return src, times, outs


def test_process_encoder_gives_the_same_file_contents(tmp_path: Path, engine, style: str, monkeypatch) -> None:  # noqa: F811
    src, times, outs = job_in_both_modes(tmp_path, engine, style, monkeypatch, "MAMBAST_VIDEO_ENCODER")
    f = video_facts(outs["process"])
    assert np.allclose(f["times"], times, atol=1e-3) and f["size"] == (32, 46)
    assert audio_packets(outs["process"]) == audio_packets(src) and audio_packets(src)     # audio remuxed as is
    a, b = decoded(outs["thread"]), decoded(outs["process"])
    assert len(a) == len(b) == 14 and all(np.array_equal(x, y) for x, y in zip(a, b))     # same pictures


def _info(tmp_path: Path) -> vio.VideoInfo:
    src = tmp_path / "src.mp4"
    make_video(src, n=4, audio=False)
    return vio.probe(str(src))


def test_encoder_errors_are_relayed_and_abort_cleans_up(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MAMBAST_VIDEO_ENCODER", raising=False)
    info = _info(tmp_path)
    with pytest.raises(OutputError, match="cannot start encoding"):
        ProcessVideoWriter(tmp_path / "bad.mp4", info, width=48, height=32, codec="no-such-encoder")
    w = make_writer(tmp_path / "x.mp4", info, width=48, height=32)             # thread mode: a VideoWriter
    assert isinstance(w, vio.VideoWriter)
    w.abort()
    pw = ProcessVideoWriter(tmp_path / "y.mp4", info, width=48, height=32, preset="ultrafast")
    assert pw.tmp and os.path.exists(pw.tmp)
    pw.write(np.zeros((32, 48, 3), np.uint8), 0)
    pw.abort()
    pw.abort()                                                                   # twice is fine
    assert not os.path.exists(pw.tmp) and not (tmp_path / "y.mp4").exists()
    assert no_temp_left(tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_child_of_a_killed_parent_removes_its_temp_file(tmp_path: Path) -> None:
    info_src = tmp_path / "src.mp4"
    make_video(info_src, n=4, audio=False)
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        from mambast_cli.video import io as vio
        from mambast_cli.video.encoder_proc import ProcessVideoWriter
        w = ProcessVideoWriter({str(tmp_path / "out.mp4")!r}, vio.probe({str(info_src)!r}), width=48, height=32,
                               preset="ultrafast")
        w.write(np.zeros((32, 48, 3), np.uint8), 0)
        print(w.tmp, flush=True)
        time.sleep(60)
    """)
    rings_before = _rings()
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                         cwd=str(Path(__file__).resolve().parents[1]))
    tmp = p.stdout.readline().strip()
    assert tmp and os.path.exists(tmp)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 20
    while (os.path.exists(tmp) or _rings() != rings_before) and time.time() < deadline:
        time.sleep(0.2)
    assert not os.path.exists(tmp) and not (tmp_path / "out.mp4").exists()
    assert _rings() == rings_before                     # the frame ring went with its owner (resource tracker)


def _rings() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("psm_")} if os.path.isdir("/dev/shm") else set()


def test_frames_cross_through_the_ring_rgb_and_yuv(tmp_path: Path, monkeypatch) -> None:
    """Frames go through the shared-memory ring (more frames than slots, so slots are reused), YUV planes and RGB
    frames give the same file as the encode thread, a frame larger than a slot goes down the pipe, and the ring is
    gone after commit and after abort."""
    from mambast_cli.video import encoder_proc
    from mambast_cli.video.yuv import yuv420_planes

    import torch

    monkeypatch.setattr(encoder_proc, "SLOTS", 3)
    info = _info(tmp_path)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(10)]
    before = _rings()
    outs = {}
    for kind in ("thread", "process"):
        for yuv in (False, True):
            cls = vio.VideoWriter if kind == "thread" else ProcessVideoWriter
            w = cls(tmp_path / f"{kind}{yuv}.mp4", info, width=48, height=32, preset="ultrafast")
            layout = w.yuv420_layout()
            assert layout is not None
            for i, f in enumerate(frames):
                if yuv:
                    x = torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255
                    w.write_yuv420(yuv420_planes(x, *layout)[0].numpy(), i)
                else:
                    w.write(f, i)
            w.commit()
            outs[kind, yuv] = decoded(tmp_path / f"{kind}{yuv}.mp4")
    for yuv in (False, True):
        assert len(outs["thread", yuv]) == 10
        assert all(np.array_equal(a, b) for a, b in zip(outs["thread", yuv], outs["process", yuv]))
    assert _rings() == before
    pw = ProcessVideoWriter(tmp_path / "mixed.mp4", info, width=48, height=32, preset="ultrafast")
    x = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float() / 255
    pw.write_yuv420(yuv420_planes(x, *pw.yuv420_layout())[0].numpy(), 0)   # the ring's slots: YUV-sized
    pw.write(frames[1], 1)                                                # larger: down the pipe
    assert _rings() != before
    pw.abort()
    assert _rings() == before and not (tmp_path / "mixed.mp4").exists()
