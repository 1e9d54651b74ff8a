"""The opt-in decoder process (MAMBAST_VIDEO_DECODER=process, mambast_cli/video/decoder_proc.py): the same frames and
copied packets as the reader thread, the same one-line error for a corrupt input, and nothing left behind (no
process, no shared memory) when the consumer stops early."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("torch")

from mambast_cli.errors import InputError  # noqa: E402
from mambast_cli.video import decoder_proc  # noqa: E402
from mambast_cli.video import io as vio  # noqa: E402
from mambast_cli.video.decoder_proc import decoder_mode, read_frames_in_process  # noqa: E402

from tests.test_video import audio_packets, engine, make_video, style  # noqa: E402,F401
from tests.test_video_encoder_proc import _rings, decoded, job_in_both_modes  # noqa: E402


def _items(it) -> list[tuple]:
    out = []
    for x in it:
        if isinstance(x, vio.DecodedFrame):
            out.append(("frame", x.pts, x.image.tobytes()))
        else:
            p = x.packet
            out.append(("packet", x.index, bytes(p), p.pts, p.dts, p.time_base, bool(p.is_keyframe)))
    return out


def test_mode_switch(monkeypatch) -> None:
    monkeypatch.delenv("MAMBAST_VIDEO_DECODER", raising=False)
    assert decoder_mode() == "thread"
    monkeypatch.setenv("MAMBAST_VIDEO_DECODER", "process")
    assert decoder_mode() == "process"


@pytest.mark.parametrize("start,duration", [(0.0, None), (0.2, 0.3)])
def test_same_frames_and_packets_as_the_reader(tmp_path: Path, monkeypatch, start: float, duration) -> None:
    monkeypatch.setattr(decoder_proc, "SLOTS", 2)                       # slots reused many times
    src = tmp_path / "clip.mp4"
    make_video(src, w=47, h=33, n=14, vfr=True, rotation=90, pix_fmt="yuv444p")
    info = vio.probe(str(src))
    before = _rings()
    kw = dict(size=(34, 48), start_s=start, duration_s=duration, copy=True)
    stats: dict[str, float] = {}
    a = _items(vio.read_frames(info, **kw))
    b = _items(read_frames_in_process(info, stats=stats, **kw))
    assert a == b and any(x[0] == "packet" for x in a) and sum(x[0] == "frame" for x in a) >= 4
    assert stats["decode_s"] > 0
    assert _rings() == before


def test_corrupt_input_and_early_stop(tmp_path: Path) -> None:
    src = tmp_path / "clip.mp4"
    make_video(src, n=30, audio=False)
    info = vio.probe(str(src))
    before = _rings()
    it = read_frames_in_process(info, size=(48, 32))
    first = next(it)
    assert isinstance(first, vio.DecodedFrame) and first.image.shape == (32, 48, 3)
    it.close()                                                            # the consumer stops: child and ring go
    assert _rings() == before
    data = src.read_bytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(data[: len(data) // 2] + os.urandom(2000))
    with pytest.raises(InputError):
        for _ in read_frames_in_process(vio.probe(str(bad)), size=(48, 32)):
            pass
    assert _rings() == before


def test_video_job_with_the_decoder_process(tmp_path: Path, engine, style: str, monkeypatch) -> None:  # noqa: F811
    src, _, outs = job_in_both_modes(tmp_path, engine, style, monkeypatch, "MAMBAST_VIDEO_DECODER")
    a, b = decoded(outs["thread"]), decoded(outs["process"])
    assert len(a) == len(b) == 14 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert audio_packets(outs["process"]) == audio_packets(src) and audio_packets(src)     # copied through the pipe


def test_interrupt_with_both_helper_processes_leaves_nothing(tmp_path: Path, engine, style: str,  # noqa: F811
                                                             monkeypatch) -> None:
    """Ctrl-C in the middle of a job whose reader and encoder run in child processes: exit code 130, no output, no
    temporary file, no shared-memory ring and no child process left."""
    import multiprocessing as mp

    from mambast_cli.video import encoder_proc
    from tests.test_video import interrupted_video_job, no_temp_left

    monkeypatch.setenv("MAMBAST_VIDEO_ENCODER", "process")
    monkeypatch.setenv("MAMBAST_VIDEO_DECODER", "process")
    used = []
    real_read, real_writer = decoder_proc.read_frames_in_process, encoder_proc.ProcessVideoWriter
    monkeypatch.setattr(decoder_proc, "read_frames_in_process", lambda *a, **k: used.append("reader") or real_read(*a, **k))

    class Writer(real_writer):  # type: ignore[misc,valid-type]
        def __init__(self, *a, **k):
            used.append("writer")
            super().__init__(*a, **k)

    monkeypatch.setattr(encoder_proc, "ProcessVideoWriter", Writer)
    before = _rings()
    r, n_calls = interrupted_video_job(tmp_path, engine, style, monkeypatch)
    assert r.exit_code == 130 and n_calls == 2 and sorted(used) == ["reader", "writer"]
    assert not (tmp_path / "o.mp4").exists() and no_temp_left(tmp_path)
    assert _rings() == before and not [p for p in mp.active_children() if p.name.startswith("mambast-")]
