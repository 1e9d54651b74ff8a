"""Tests for mambast_cli.io: decoding rules, resizing, encoding, safe names and atomic writes."""
from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mambast_cli.errors import InputError, OutputError, OutputPathError
from mambast_cli.io import (
    clean_stale_parts,
    decode_image,
    encode_image,
    image_to_tensor,
    is_within,
    load_image,
    looks_like_image,
    out_path,
    output_name,
    probe_writable,
    read_input_bytes,
    safe_component,
    target_size,
    tensor_to_image,
    write_atomic,
)


def _png_bytes(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


# -- names ---------------------------------------------------------------------------------------------------
NASTY = ["..", ".", "", "/", "/etc/passwd", "../../x", "a/../../b", "a\0b", "a\nb\r", "\\..\\..\\win", ".hidden",
         "x" * 500, "é" * 300, "\udcff\udcfe", "ok name with spaces"]


@pytest.mark.parametrize("name", NASTY)
def test_safe_component_is_one_harmless_component(name: str) -> None:
    s = safe_component(name)
    assert s and s not in (".", "..")
    assert not s.startswith(".")
    assert not any(c in s for c in "/\\\0\n\r")
    assert len(s.encode("utf-8")) <= 200  # also proves it is encodable


@pytest.mark.parametrize("name", NASTY)
def test_outputs_never_escape_the_output_folder(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    p = out_path(out, (name, name), output_name(name, name, ".jpg"))
    assert is_within(p, out) and p != out
    assert os.path.normpath(p).startswith(os.path.normpath(out) + os.sep)


def test_output_name_shape() -> None:
    assert output_name("photo", "van gogh", ".jpg") == "photo__van gogh.jpg"
    assert output_name("photo", "s", ".png", dedup=3) == "photo__s_3.png"


# -- atomic writes -------------------------------------------------------------------------------------------
def test_write_atomic_writes_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.jpg"
    write_atomic(target, b"hello")
    assert target.read_bytes() == b"hello"
    write_atomic(target, b"again")
    assert target.read_bytes() == b"again"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.jpg"]


def test_write_atomic_creates_missing_folders_and_names_a_file_in_the_way(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a" / "b" / "x.jpg", b"deep")            # folders made on the first miss only
    assert (tmp_path / "a" / "b" / "x.jpg").read_bytes() == b"deep"
    (tmp_path / "blocker").write_bytes(b"")
    # a path blocked for this output only fails this output (OutputPathError), it does not stop the run (OutputError)
    with pytest.raises(OutputPathError, match="a file is in the way"):
        write_atomic(tmp_path / "blocker" / "x.jpg", b"data")
    with pytest.raises(OutputPathError, match="a file is in the way"):
        write_atomic(tmp_path / "blocker" / "sub" / "x.jpg", b"data")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(OutputPathError, match="a folder has that name"):
        write_atomic(tmp_path / "dir.jpg", b"data")
    assert [p.name for p in tmp_path.iterdir() if ".part-" in p.name] == []


def test_write_atomic_draws_another_temporary_name_on_a_clash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mambast_cli.io import files

    taken = tmp_path / f".a.jpg{files.PART_MARKER}{os.getpid()}-0000beef"
    taken.write_bytes(b"another writer's")
    names = iter([str(taken)])
    real = files.temp_path
    monkeypatch.setattr(files, "temp_path", lambda final: next(names, None) or real(final))
    write_atomic(tmp_path / "a.jpg", b"mine")
    assert (tmp_path / "a.jpg").read_bytes() == b"mine" and taken.read_bytes() == b"another writer's"


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_write_atomic_maps_rename_errors_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def boom(src: str, dst: str) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OutputError) as ei:
        write_atomic(tmp_path / "a.jpg", b"data")
    assert ei.value.hint  # says what to do
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_enospc_while_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OutputError, match="No space"):
        write_atomic(tmp_path / "a.png", b"x" * 100)
    assert list(tmp_path.iterdir()) == []


def test_output_folder_blocked_by_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError):
        probe_writable(tmp_path / "file" / "out")


def test_clean_stale_parts_removes_only_dead_writers(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".a.jpg.part-{dead_pid}-deadbeef"
    mine = tmp_path / f".b.jpg.part-{os.getpid()}-deadbeef"
    other = tmp_path / ".c.jpg.part-notmine"
    for p in (stale, mine, other):
        p.write_bytes(b"x")
    assert clean_stale_parts(tmp_path) == 1
    assert not stale.exists() and mine.exists() and other.exists()
    # hidden frame folders of killed image-sequence video runs go too; a live writer's folder and other folders stay
    dead_dir = tmp_path / f".mambast-frames.part-{dead_pid}-0123abcd"
    live_dir = tmp_path / f".mambast-frames.part-{os.getpid()}-0123abcd"
    user_dir = tmp_path / f".photos.part-{dead_pid}-0123abcd"          # a folder: never removed
    for d in (dead_dir, live_dir, user_dir):
        d.mkdir()
        (d / "000001.png").write_bytes(b"x")
    assert clean_stale_parts(tmp_path) == 1
    assert not dead_dir.exists() and live_dir.exists() and user_dir.exists()


# -- reading -------------------------------------------------------------------------------------------------
def test_read_refuses_odd_files(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(InputError, match="directory"):
        read_input_bytes(tmp_path / "x.jpg")
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="regular"):
        read_input_bytes(fifo)  # must not block
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(InputError, match="broken"):
        read_input_bytes(tmp_path / "broken.jpg")
    (tmp_path / "loop1.jpg").symlink_to(tmp_path / "loop2.jpg")
    (tmp_path / "loop2.jpg").symlink_to(tmp_path / "loop1.jpg")
    with pytest.raises(InputError, match="symbolic links|cannot read"):
        read_input_bytes(tmp_path / "loop1.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_input_bytes(tmp_path / "empty.jpg")
    with pytest.raises(InputError, match="no such file"):
        read_input_bytes(tmp_path / "missing.jpg")


def test_read_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "secret.jpg"
    p.write_bytes(b"\xff\xd8\xff")
    p.chmod(0)
    if not os.access(p, os.R_OK):  # not root: the real thing
        with pytest.raises(InputError, match="Permission denied"):
            read_input_bytes(p)
    import mambast_cli.io.images as images

    def denied(path: str) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(images, "_read_file", denied)
    with pytest.raises(InputError, match="Permission denied"):
        read_input_bytes(p)


# -- decoding ------------------------------------------------------------------------------------------------
def test_sniffs_content_not_extension() -> None:
    data = _png_bytes(Image.new("RGB", (5, 4), (1, 2, 3)))
    assert decode_image(data, name="really_a_png.jpg").size == (5, 4)
    with pytest.raises(InputError, match="not a recognised image"):
        decode_image(b"just some text\n", name="text.jpg")


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    out = decode_image(buf.getvalue())
    assert out.size == (20, 40)
    r, g, b = out.getpixel((10, 5))  # the red half is on top after a clockwise turn
    assert r > 200 and b < 60


def test_transparency_composited_on_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decode_image(_png_bytes(rgba)).getpixel((0, 0)) == (255, 255, 255)
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert decode_image(_png_bytes(p, transparency=1)).getpixel((0, 0)) == (255, 255, 255)
    assert decode_image(_png_bytes(p)).getpixel((0, 0)) == (10, 20, 30)


def test_high_bit_depth_and_cmyk_and_gray() -> None:
    a = np.full((3, 5), 65535, dtype=np.uint16)
    a[0, 0] = 0
    out = decode_image(_png_bytes(Image.fromarray(a)))
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 0)
    buf = io.BytesIO()
    Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(buf, "JPEG")
    r, g, b = decode_image(buf.getvalue()).getpixel((3, 3))
    assert r > 200 and g < 60 and b < 60
    assert decode_image(_png_bytes(Image.new("L", (3, 3), 77))).getpixel((1, 1)) == (77, 77, 77)


def test_decompression_bomb_limit() -> None:
    data = _png_bytes(Image.new("L", (1000, 1000)))
    with pytest.raises(InputError, match="over the limit") as ei:
        decode_image(data, name="bomb.png", max_pixels=500_000)
    assert "--max-pixels" in (ei.value.hint or "")
    assert decode_image(data, max_pixels=2_000_000).size == (1000, 1000)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
    r, g, b = decode_image(buf.getvalue()).getpixel((4, 4))
    assert r > 200 and g < 50 and b < 50


def test_truncated_files_fail_cleanly() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    with pytest.raises(InputError):
        decode_image(buf.getvalue()[: len(buf.getvalue()) // 2], name="t.jpg")
    png = _png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(InputError):
        decode_image(png[: len(png) // 2], name="t.png")


def test_looks_like_image() -> None:
    assert looks_like_image(_png_bytes(Image.new("RGB", (1, 1)))[:16])
    assert looks_like_image(b"\xff\xd8\xff\xe0" + b"\0" * 12)
    assert looks_like_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    assert not looks_like_image(b"photos/a.jpg\nphotos/b.jpg\n")
    assert not looks_like_image(b"BMW/photo.jpg\n")


# -- sizes and tensors ---------------------------------------------------------------------------------------
def test_target_size() -> None:
    assert target_size(1000, 500, size=512) == (1024, 512)
    assert target_size(1000, 500, size=512, max_side=800) == (800, 400)
    assert target_size(1000, 500) == (1000, 500)
    assert target_size(1, 1) == (1, 1)  # tiny pictures keep their size: the model pads them itself
    assert target_size(7, 5) == (7, 5)
    assert target_size(1, 1, min_side=16) == (16, 16)  # the video path keeps a floor
    assert target_size(7, 5, size=512) == (717, 512)


def test_load_image_resizes_tiny_pictures() -> None:
    img = load_image(_png_bytes(Image.new("RGB", (7, 5), (9, 9, 9))), size=64)
    assert min(img.size) == 64


def test_tensor_roundtrip_and_encoders() -> None:
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (9, 13, 3), dtype=np.uint8))
    t = image_to_tensor(img)
    assert t.shape == (3, 9, 13) and float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert np.array_equal(np.asarray(tensor_to_image(t)), np.asarray(img))
    for fmt, magic in (("jpg", b"\xff\xd8"), ("png", b"\x89PNG"), ("webp", b"RIFF")):
        data = encode_image(img, fmt, 80)
        assert data.startswith(magic)
        assert decode_image(data).size == (13, 9)


@pytest.mark.parametrize("fmt,quality", [("jpg", 92), ("jpg", 75), ("png", None), ("webp", 90)])
def test_encode_image_same_bytes_through_a_descriptor_or_a_bytesio(fmt: str, quality: int | None, monkeypatch) -> None:
    """encode_image writes into an in-memory file with a descriptor (so Pillow encodes without the GIL); without
    memfd it falls back to a BytesIO. Both give exactly Pillow's bytes."""
    from mambast_cli.io import images

    img = Image.fromarray(np.random.default_rng(3).integers(0, 255, (70, 90, 3), dtype=np.uint8))
    direct = io.BytesIO()
    kw = {"jpg": {"quality": quality, "subsampling": 0 if (quality or 0) >= 90 else 2},
          "png": {"compress_level": 6}, "webp": {"quality": quality, "method": 4}}[fmt]
    img.save(direct, images.FORMATS[fmt][0], **kw)
    if hasattr(os, "memfd_create"):
        assert not isinstance(images._memory_file(), io.BytesIO)
    via_fd = encode_image(img, fmt, quality)
    assert encode_image(img.resize((20, 10)), fmt, quality) != via_fd        # the reused file: only the new bytes
    assert via_fd == encode_image(img, fmt, quality)
    monkeypatch.delattr(os, "memfd_create", raising=False)
    monkeypatch.setattr(images, "_files", threading.local())               # forget this thread's memfd
    assert isinstance(images._memory_file(), io.BytesIO)
    assert via_fd == encode_image(img, fmt, quality) == direct.getvalue()


@pytest.mark.parametrize("w,h", [(1, 1), (13, 9), (512, 512), (641, 479)])
def test_image_to_array_equals_numpy_asarray(w: int, h: int, monkeypatch) -> None:
    """image_to_array (pixels out through a memfd, without the GIL) gives np.asarray's values, also for a picture
    larger than the memfd keeps (emptied after use), and falls back to np.asarray without memfd."""
    from mambast_cli.io import images

    img = Image.fromarray(np.random.default_rng(w).integers(0, 256, (h, w, 3), dtype=np.uint8))
    want = np.asarray(img)
    got = images.image_to_array(img)
    assert got.dtype == np.uint8 and got.shape == (h, w, 3) and np.array_equal(got, want)
    assert images.image_to_array(img.resize((3, 2))).shape == (2, 3, 3)           # the reused file: no stale tail
    monkeypatch.setattr(images, "_KEEP_BYTES", 100)
    assert np.array_equal(images.image_to_array(img), want)
    f = images._memory_file()
    if not isinstance(f, io.BytesIO) and w * h * 3 > 100:
        assert os.fstat(f.fileno()).st_size == 0                                  # its pages given back
    monkeypatch.setenv("MAMBAST_ENCODE_MEMFD", "0")
    assert np.array_equal(images.image_to_array(img), want)
    with pytest.raises(ValueError, match="RGB"):
        images.image_to_array(img.convert("L"))
