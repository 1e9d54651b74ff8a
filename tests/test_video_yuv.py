"""YUV 4:2:0 made on the engine's device (mambast_cli/video/yuv.py) vs swscale, and the video job with it vs the
RGB path (the encode thread converting with swscale)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
torch = pytest.importorskip("torch")

from mambast_cli.video import VideoOptions, run_videos  # noqa: E402
from mambast_cli.video import io as vio  # noqa: E402
from mambast_cli.video.yuv import YUV_MATRICES, supports, yuv420_planes  # noqa: E402
from mambast_cli.pipeline.fake import FakeEngine  # noqa: E402
from tests.test_video import make_video, style  # noqa: E402,F401  (style is a fixture)


def _picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 9, yy * 13, 255 - xx * 7], -1)
    return np.clip(base + rng.integers(-50, 50, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("matrix", sorted(YUV_MATRICES))
@pytest.mark.parametrize("full", [False, True])
def test_planes_match_swscale_area(matrix: int, full: bool) -> None:
    h, w = 10, 14                                   # chroma planes 5×7: their rows do not line up with the luma's
    img = _picture(h, w, seed=matrix)
    ref = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(
        format="yuv420p", src_colorspace=matrix, dst_colorspace=matrix, src_color_range=2,
        dst_color_range=2 if full else 1, interpolation="AREA").to_ndarray().astype(int)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    ours = yuv420_planes(torch.cat([x, x.flip(-1)]), matrix, full)       # a batch of two
    assert ours.shape == (2, h * 3 // 2, w) and ours.dtype == torch.uint8
    d = np.abs(ours[0].numpy().astype(int) - ref)
    assert d.max() <= 1 and d.mean() < 0.25, (d.max(), d.mean())
    frame = av.VideoFrame.from_ndarray(ours[0].numpy(), format="yuv420p")   # the layout PyAV reads
    assert (frame.width, frame.height) == (w, h)


def test_supports() -> None:
    assert supports("yuv420p", 1, 64, 48) and not supports("yuv444p", 1, 64, 48)
    assert not supports("yuv420p", 1, 63, 48) and not supports("yuv420p", 2, 64, 48)


def _planes(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray().astype(int) for f in c.decode(c.streams.video[0])]


@pytest.mark.parametrize("size,tags", [((48, 32), dict(colorspace=1)),
                                       ((47, 33), dict(pix_fmt="yuv444p", color_range=2, colorspace=5))])
def test_job_output_matches_the_rgb_path(tmp_path: Path, style: str, monkeypatch, size, tags) -> None:  # noqa: F811
    """Lossless (crf 0) outputs of both paths decode to the same planes within one code value (the device path
    converts the float result, the RGB path its 8-bit rounding); odd sizes are cropped alike; tags are kept. The fake
    engine keeps the frames' colours (half content, half the style's mean), so a wrong matrix would show."""
    engine = FakeEngine("1")
    src = tmp_path / "clip.mp4"
    make_video(src, w=size[0], h=size[1], n=5, audio=False, **tags)
    calls = []
    real = vio.VideoWriter.write_yuv420
    monkeypatch.setattr(vio.VideoWriter, "write_yuv420", lambda self, *a: calls.append(1) or real(self, *a))
    outs = {}
    for on in ("1", "0"):
        monkeypatch.setenv("MAMBAST_VIDEO_GPU_YUV", on)
        out = tmp_path / f"out{on}.mp4"
        rep = run_videos([src], style, engine, VideoOptions(output=str(out), crf=0))
        assert rep.ok, rep.items[0].message
        outs[on] = _planes(out)
        facts = vio.probe(str(out))
        assert (facts.width, facts.height) == (size[0] // 2 * 2, size[1] // 2 * 2)
        assert facts.color_range == tags.get("color_range", 1) or (facts.color_range == 0 and "color_range" not in tags)
    assert len(calls) == 5                          # the device path was taken for every frame (and only with it on)
    assert len(outs["1"]) == len(outs["0"]) == 5
    for a, b in zip(outs["1"], outs["0"]):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1


@pytest.mark.parametrize("h,w", [(10, 14), (33, 47), (1, 3)])
def test_frames_from_arrays_equal_pyav_from_ndarray(h: int, w: int) -> None:
    """vio.frame_from_rgb / frame_from_yuv420 (numpy copies into the planes) give PyAV's from_ndarray frames."""
    img = _picture(h, w)
    a = vio.frame_from_rgb(img)
    assert (a.width, a.height, a.format.name) == (w, h, "rgb24")
    assert np.array_equal(a.to_ndarray(), av.VideoFrame.from_ndarray(img, format="rgb24").to_ndarray())
    if h % 2 == 0 and w % 2 == 0:
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        planes = yuv420_planes(x, 1, False)[0].numpy()
        b = vio.frame_from_yuv420(planes)
        assert (b.width, b.height, b.format.name) == (w, h, "yuv420p")
        assert np.array_equal(b.to_ndarray(), av.VideoFrame.from_ndarray(planes, format="yuv420p").to_ndarray())
