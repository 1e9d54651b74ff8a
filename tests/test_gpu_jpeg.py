"""JPEG decoding on the GPU (mambast_cli/io/gpu_jpeg.py) and the pipeline's path for it, on the CPU: the header-only
size must equal the CPU decoder's, and the pipeline (forced onto its CUDA path) must carry JPEG bytes to the engine
thread, decode them there with the stand-in decoder, fall back to the CPU for batches the decoder refuses, report
broken files as item errors and keep other formats on the CPU path. The real nvJPEG call runs only on a GPU
(scripts/device/next_lease6.sh)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mambast_cli.io import load_image
from mambast_cli.io.gpu_jpeg import is_jpeg, processed_size
from mambast_cli.pipeline import RunOptions, plan_jobs, run_plan
from mambast_cli.pipeline import run as prun


def _jpeg(w: int, h: int, orientation: int = 1, seed: int = 0) -> bytes:
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("w,h", [(1201, 901), (901, 1201), (640, 480), (100, 60), (2049, 33)])
@pytest.mark.parametrize("orientation", [1, 6, 3, 8])
@pytest.mark.parametrize("size,max_side", [(512, 2048), (0, 0), (256, 300)])
def test_processed_size_equals_the_cpu_decoder(w: int, h: int, orientation: int, size: int, max_side: int) -> None:
    data = _jpeg(w, h, orientation)
    img = load_image(data, size=size, max_side=max_side)              # libjpeg DCT scaling, EXIF rotation, Lanczos
    assert processed_size(data, size=size, max_side=max_side) == (img.size[1], img.size[0])


def test_header_errors() -> None:
    from mambast_cli.errors import InputError

    assert is_jpeg(_jpeg(8, 8)) and not is_jpeg(b"\x89PNG\r\n")
    with pytest.raises(InputError, match="header"):
        processed_size(b"\xff\xd8\xff\x00garbage")
    with pytest.raises(InputError, match="limit"):
        processed_size(_jpeg(64, 64), max_pixels=100)


def _pillow_decode_jpeg(tensors, mode=None, apply_exif_orientation=False, device=None):
    """Stands in for torchvision.io.decode_jpeg: Pillow's pixels as (3, H, W) uint8, EXIF ignored (as nvJPEG did)."""
    return [torch.from_numpy(np.asarray(Image.open(io.BytesIO(t.numpy().tobytes())).convert("RGB"))).permute(2, 0, 1)
            for t in tensors]


@pytest.fixture()
def fake_torchvision(monkeypatch):
    """torchvision.io replaced by a module whose decode_jpeg is `decode` (default: `_pillow_decode_jpeg`)."""
    import sys
    import types

    from mambast_cli.io import gpu_jpeg

    def install(decode=_pillow_decode_jpeg):
        fake = types.ModuleType("torchvision.io")
        fake.decode_jpeg = decode                              # type: ignore[attr-defined]
        fake.ImageReadMode = types.SimpleNamespace(RGB="RGB")  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
        monkeypatch.setitem(sys.modules, "torchvision.io", fake)
        monkeypatch.setattr(gpu_jpeg, "_load_image_ops", lambda: None)   # the public-import path
        gpu_jpeg._batch_decoder.cache_clear()
    yield install
    gpu_jpeg._batch_decoder.cache_clear()


class _Engine:
    """A CUDA-like engine on the CPU (the pipeline is forced onto its CUDA path below): returns its input batch."""

    device = torch.device("cpu")
    stats: dict[str, int] = {}

    def max_batch(self, h: int, w: int) -> int:
        return 3

    def encode_style(self, image: Any, *, key: str | None = None, style_size: int | None = None) -> object:
        return object()

    def stylize(self, x: Any, handle: Any, *, alpha: float = 1.0, preserve_color: bool = False,
                on_device: bool = False) -> Any:
        return x


def _cpu_decode_stand_in(calls: list[int], fail: bool = False):
    """Stands in for nvJPEG: the CPU decoder at the requested size (so outputs equal the CPU path's)."""
    def decode(datas: list[bytes], hw: tuple[int, int], device: Any, orientations: list[int]) -> Any:
        calls.append(len(datas))
        assert orientations == [1] * len(datas)
        if fail:
            raise RuntimeError("nvjpeg: unsupported")
        pics = [np.asarray(load_image(d, size=512, max_side=0), dtype=np.uint8) for d in datas]
        assert all(p.shape[:2] == hw for p in pics)
        return torch.from_numpy(np.stack(pics)).permute(0, 3, 1, 2).float().div(255.0)
    return decode


@pytest.mark.parametrize("fail", [False, True])
def test_pipeline_decodes_jpegs_on_the_engine_thread(tmp_path: Path, make_image: Any, monkeypatch, fail: bool) -> None:
    for i, (w, h) in enumerate([(600, 520), (600, 520), (520, 600), (600, 520)]):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"p{i}.jpg").write_bytes(_jpeg(w, h, seed=i))
    make_image("in/q.png", size=(530, 512))                                  # not a JPEG: the CPU path
    good = (tmp_path / "in" / "p0.jpg").read_bytes()
    (tmp_path / "in" / "broken.jpg").write_bytes(good[: len(good) // 3])     # header fine, data cut
    s = make_image("style.png")
    monkeypatch.setattr(prun, "_is_cuda", lambda d: True)
    monkeypatch.setattr(prun, "_pinned_empty", lambda n: torch.empty(n, dtype=torch.uint8))
    opts = RunOptions(size=512, max_side=0, decode_workers=2, write_workers=2, fsync=False)
    outs = {}
    for mode in ("cpu", "gpu"):
        calls: list[int] = []
        monkeypatch.setenv("MAMBAST_GPU_DECODE", "0")
        if mode == "gpu":
            monkeypatch.setenv("MAMBAST_GPU_DECODE", "1")
            monkeypatch.setattr(prun.gpu_jpeg, "available", lambda: True)
            monkeypatch.setattr(prun, "gpu_decode_resize", _cpu_decode_stand_in(calls, fail))
        out = tmp_path / f"out_{mode}"
        report = run_plan(plan_jobs([str(tmp_path / "in")], [str(s)], out, fmt="png"), _Engine(), opts)
        outs[mode] = {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}
        assert report.ok == 5 and report.failed == 1                         # broken.jpg: an item error either way
        assert "broken" in report.errors[0].input
        if mode == "gpu":
            jpeg_batches = sorted(calls)
            if fail:     # every JPEG batch refused, decoded on the CPU instead; the broken file fails there
                assert report.gpu_decoded == 0 and report.gpu_decode_fallbacks == 5
            else:        # buckets by size: 600×520 ×3 plus broken (same header size), 520×600 ×1
                assert jpeg_batches[-1] == 3 and report.gpu_decoded + report.gpu_decode_fallbacks == 5
            assert report.to_dict()["gpu_decode_fallbacks"] == report.gpu_decode_fallbacks
    assert outs["gpu"] == outs["cpu"] and len(outs["cpu"]) == 5


def test_gpu_decoding_is_given_up_after_batches_refused_in_a_row(tmp_path: Path, make_image: Any, monkeypatch) -> None:
    """A decoder that refuses every batch (e.g. a torchvision built without nvJPEG) is tried on 3 batches, then the run
    goes on with CPU decoding, says so once, and every picture still comes out."""
    (tmp_path / "in").mkdir()
    for i in range(12):
        (tmp_path / "in" / f"p{i:02d}.jpg").write_bytes(_jpeg(600, 520, seed=i))
    s = make_image("style.png")
    monkeypatch.setattr(prun, "_is_cuda", lambda d: True)
    monkeypatch.setattr(prun, "_pinned_empty", lambda n: torch.empty(n, dtype=torch.uint8))
    monkeypatch.setenv("MAMBAST_GPU_DECODE", "1")
    monkeypatch.setattr(prun.gpu_jpeg, "available", lambda: True)
    calls: list[int] = []
    monkeypatch.setattr(prun, "gpu_decode_resize", _cpu_decode_stand_in(calls, fail=True))
    events: list[Any] = []
    opts = RunOptions(size=512, max_side=0, decode_workers=2, write_workers=2, fsync=False)
    report = run_plan(plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out", fmt="png"), _Engine(), opts,
                      on_event=events.append)
    assert report.ok == 12 and report.failed == 0
    assert len(calls) == prun._GPU_JPEG_MAX_FAILURES                 # then never asked again
    notes = [e for e in events if getattr(e, "kind", None) == "note" and "GPU" in str(getattr(e, "message", ""))]
    assert len(notes) == 1 and "RuntimeError" in notes[0].message


def test_decode_resize_glue_with_a_stand_in_torchvision(fake_torchvision) -> None:
    """`decode_resize`'s own code around torchvision's decode_jpeg (the call's arguments, the resize to one size, the
    8-bit quantisation), with torchvision.io replaced by a Pillow stand-in that returns (3, H, W) uint8 pictures."""
    from mambast_cli.io.gpu_jpeg import decode_resize

    seen: dict[str, Any] = {}

    def decode_jpeg(tensors, mode=None, apply_exif_orientation=False, device=None):
        seen.update(n=len(tensors), mode=mode, exif=apply_exif_orientation, device=device)
        return _pillow_decode_jpeg(tensors)

    fake_torchvision(decode_jpeg)
    datas = [_jpeg(64, 48, seed=1), _jpeg(32, 24, seed=2)]
    x = decode_resize(datas, (48, 64), torch.device("cpu"))
    assert seen == {"n": 2, "mode": "RGB", "exif": False, "device": torch.device("cpu")}
    assert x.shape == (2, 3, 48, 64) and x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert torch.equal((x * 255).round(), x * 255) or torch.allclose((x * 255).round(), x * 255, atol=1e-4)
    direct = torch.from_numpy(np.asarray(Image.open(io.BytesIO(datas[0])).convert("RGB"))).permute(2, 0, 1).float()
    assert torch.allclose(x[0] * 255, direct, atol=1e-3)                    # the right size already: not resampled


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_is_pillows_exif_transpose(orientation: int) -> None:
    """The GPU path turns pictures upright itself (torchvision's CUDA decoder ignored EXIF orientation on the H100):
    every orientation gives Pillow's `exif_transpose` pixels, on a non-square picture with no symmetry."""
    from PIL import ImageOps

    from mambast_cli.io.gpu_jpeg import apply_orientation

    rgb = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img = Image.open(io.BytesIO(_png_with_exif(Image.fromarray(rgb), exif)))
    want = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    got = apply_orientation(torch.from_numpy(rgb).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    assert got.shape == want.shape and np.array_equal(got, want)


def _png_with_exif(img: Image.Image, exif: Image.Exif) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", exif=exif.tobytes())       # lossless, so pixels compare exactly
    return buf.getvalue()


def test_rotated_jpeg_through_decode_resize_matches_the_cpu_path(fake_torchvision) -> None:
    """A JPEG with EXIF orientation 6, through `decode_resize` with a decoder that ignores EXIF (as nvJPEG did): the
    orientation read from the header turns it upright, the same size and pixels as `load_image` up to resampling."""
    from mambast_cli.io.gpu_jpeg import decode_resize, jpeg_header

    fake_torchvision()
    data = _jpeg(96, 64, seed=3, orientation=6)
    h, w, orientation = jpeg_header(data)
    assert (h, w, orientation) == (96, 64, 6)
    want = np.asarray(load_image(data, size=0, max_side=0), dtype=np.float64)
    for orients in ([orientation], None):                 # given by the pipeline, or read from the header
        x = decode_resize([data], (h, w), torch.device("cpu"), orients)[0].permute(1, 2, 0).double().numpy() * 255
        assert x.shape == want.shape and np.abs(x - want).mean() < 1.0


def test_decode_resize_groups_by_size_like_one_picture_at_a_time(fake_torchvision) -> None:
    """Pictures are converted and resized in groups of one decoded size: the same result as one at a time, for a
    batch that mixes sizes, orientations and pictures that need no resize."""
    import torch.nn.functional as F

    from mambast_cli.io.gpu_jpeg import apply_orientation, decode_resize

    fake_torchvision()
    datas = [_jpeg(64, 48, seed=1), _jpeg(96, 72, seed=2), _jpeg(48, 64, orientation=6, seed=3),
             _jpeg(96, 72, seed=4), _jpeg(72, 96, orientation=8, seed=5)]
    orients = [1, 1, 6, 1, 8]
    x = decode_resize(datas, (48, 64), torch.device("cpu"), orients)
    for i, (d, o) in enumerate(zip(datas, orients)):
        im = apply_orientation(_pillow_decode_jpeg([torch.frombuffer(bytearray(d), dtype=torch.uint8)])[0], o).float()
        if tuple(im.shape[-2:]) != (48, 64):
            im = F.interpolate(im[None], size=(48, 64), mode="bicubic", antialias=True, align_corners=False)[0]
        assert torch.equal(x[i], im.clamp(0, 255).round() / 255.0), i


class _FakeOp:
    """Stands in for ``torch.ops.image.decode_jpegs_cuda``: records its arguments, decodes with Pillow."""

    def __init__(self, types_: tuple[str, ...]):
        import types

        self.calls: list[tuple] = []
        args = [types.SimpleNamespace(type=t) for t in types_]
        self.default = types.SimpleNamespace(_schema=types.SimpleNamespace(arguments=args))

    def __call__(self, tensors, mode, device):
        self.calls.append((len(tensors), mode, device))
        return _pillow_decode_jpeg(tensors)


@pytest.mark.parametrize("case", ["ok", "ok, Tensor[]", "other schema", "does not load", "no library"])
def test_image_ops_loaded_without_importing_torchvision(tmp_path: Path, monkeypatch, case: str) -> None:
    """The fast loader finds torchvision's image library from the package's location (its __init__ never runs), loads
    it, and uses the batched CUDA op only when its schema is (Tensor[], int, Device), with mode 3 (RGB)."""
    import importlib.util
    import sys
    import types

    from mambast_cli.io import gpu_jpeg

    pkg = tmp_path / "torchvision"
    pkg.mkdir()
    if case != "no library":
        (pkg / "image.so").write_bytes(b"")
    spec = types.SimpleNamespace(submodule_search_locations=[str(pkg)])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec if name == "torchvision" else None)
    # the list type prints as 'List[Tensor]' with torch 2.11 / torchvision 0.26 (the GPU host), 'Tensor[]' elsewhere
    types_ = {"ok": ("List[Tensor]", "int", "Device"), "ok, Tensor[]": ("Tensor[]", "int", "Device"),
              "other schema": ("List[Tensor]", "int")}.get(case, ("List[Tensor]", "int", "Device"))
    op = _FakeOp(types_)
    loaded: list[str] = []

    def load_library(path: str) -> None:
        if case == "does not load":
            raise OSError("undefined symbol")
        loaded.append(path)

    monkeypatch.setattr(torch.ops, "load_library", load_library)
    monkeypatch.setattr(torch.ops, "image", types.SimpleNamespace(decode_jpegs_cuda=op), raising=False)
    before = set(sys.modules)
    decode = gpu_jpeg._load_image_ops()
    assert not any(m.startswith("torchvision") for m in set(sys.modules) - before)
    if not case.startswith("ok"):
        assert decode is None
        return
    assert loaded == [str(pkg / "image.so")]
    imgs = decode([torch.frombuffer(bytearray(_jpeg(32, 24)), dtype=torch.uint8)], "cpu")
    assert op.calls == [(1, 3, torch.device("cpu"))] and imgs[0].shape == (3, 24, 32)


def test_no_gpu_decoder_means_not_available_and_a_clear_error(monkeypatch) -> None:
    from mambast_cli.io import gpu_jpeg

    monkeypatch.setattr(gpu_jpeg, "_load_image_ops", lambda: None)
    monkeypatch.setattr(gpu_jpeg, "_import_torchvision", lambda: None)
    gpu_jpeg._batch_decoder.cache_clear()
    try:
        assert not gpu_jpeg.available()
        with pytest.raises(RuntimeError, match="gpu-jpeg"):
            gpu_jpeg.decode_resize([_jpeg(8, 8)], (8, 8), torch.device("cpu"))
    finally:
        gpu_jpeg._batch_decoder.cache_clear()
