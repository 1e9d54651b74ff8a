"""Decode, normalise, resize and encode still images; convert between Pillow images and [0,1] tensors.

Owns every Pillow call of the project's stills path. Must not print, batch, or know about the model.

Decoding rules (documented in docs/cli.md):
- The format is sniffed from the bytes, never from the extension: a PNG named ``.jpg`` decodes, a text file named
  ``.jpg`` is an InputError.
- EXIF orientation is applied, so the picture comes out upright.
- Animated GIF/WebP/APNG: the first frame is used.
- Every mode becomes 8-bit RGB. Transparency (RGBA, LA, palette + transparency, tRNS colour keys) is composited
  on white; CMYK uses Pillow's conversion (no ICC colour management); 16-bit and 32-bit grayscale are scaled to
  8 bits (16-bit RGB PNGs are reduced to 8 bits by Pillow itself).
- Pictures over ``max_pixels`` (width × height, checked from the header before any pixel is decoded) are refused
  with an InputError: this is the decompression-bomb limit, ``--max-pixels`` on the command line.
Tensors are (3, H, W) float32 in [0, 1] on the CPU.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import threading
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

from mambast_cli.errors import InputError
from mambast_cli.io.transfer import upload_async

if TYPE_CHECKING:  # torch is imported lazily: this module is loaded by the CLI before any heavy import
    import numpy as np
    import torch

# We enforce our own pixel limit (max_pixels) from the header; Pillow's global bomb check would otherwise refuse
# pictures above 2 × 89 Mpx whatever --max-pixels says.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own hard limit (2 × 89,478,485 px, about 13k × 13k)
MAX_FILE_BYTES = 1 << 31  # 2 GiB: larger "images" are refused before they are read into memory
MIN_SIDE = 1  # no upscaling of tiny pictures: the model pads them itself (1×1 and 7×5 inputs keep their size)

# --format value -> (Pillow format name, file extension, default quality)
FORMATS: dict[str, tuple[str, str, int]] = {
    "jpg": ("JPEG", ".jpg", 92),
    "png": ("PNG", ".png", 0),
    "webp": ("WEBP", ".webp", 90),
}

# Magic numbers of the formats we decode; used only to tell image bytes from a list of paths on stdin.
_MAGIC: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),  # PNG / APNG
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (0, b"BM"),  # BMP
    (0, b"II*\x00"),  # TIFF little-endian
    (0, b"MM\x00*"),  # TIFF big-endian
    (0, b"\x00\x00\x00\x0cjP  "),  # JPEG 2000
)


def looks_like_image(head: bytes) -> bool:
    """Tell whether some leading bytes start a picture we can decode (by magic number).

    Args:
        head: the first bytes of a stream (16 are enough).

    Returns:
        True for JPEG, PNG, GIF, WebP, BMP, TIFF and JPEG 2000 signatures.
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[:2] == b"BM":
        # "BM" could start a path ("BMW/photo.jpg"): require a plausible BMP header (reserved bytes are zero)
        return len(head) >= 10 and head[6:10] == b"\x00\x00\x00\x00"
    return any(head[off : off + len(sig)] == sig for off, sig in _MAGIC)


def read_input_bytes(path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a whole input file, refusing anything that is not a readable regular file.

    Args:
        path: the file (symlinks are followed).
        max_bytes: refuse files larger than this.

    Returns:
        The file's bytes.

    Raises:
        InputError: missing file, broken symlink, symlink loop, directory, FIFO/device/socket, empty file,
            permission denied, or any other read error. Never blocks on a FIFO.
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise InputError(f"{p}: broken symbolic link (its target does not exist)") from None
        raise InputError(f"{p}: no such file") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read ({_strerror(e)})") from e
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p}: is a directory, not an image")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p}: not a regular file (FIFO, device or socket)")
    if st.st_size == 0:
        raise InputError(f"{p}: empty file (0 bytes)")
    if st.st_size > max_bytes:
        raise InputError(f"{p}: file too large ({st.st_size} bytes)")
    try:
        return _read_file(p)
    except OSError as e:
        raise InputError(f"{p}: cannot read ({_strerror(e)})") from e


def _read_file(path: str) -> bytes:
    """Read a regular file (a separate function so tests can inject read errors)."""
    with open(path, "rb") as f:
        return f.read()


def _strerror(e: OSError) -> str:
    """A short human reason for an OSError (``Permission denied``, ``Too many levels of symbolic links``)."""
    return e.strerror or e.__class__.__name__


def decode_image(
    data: bytes, *, name: str = "<image>", max_pixels: int = DEFAULT_MAX_PIXELS, min_size: int = 0, max_side: int = 0
) -> Image.Image:
    """Decode image bytes into an upright 8-bit RGB Pillow image (rules in the module docstring).

    Args:
        data: the encoded bytes (any format Pillow reads; sniffed from the content).
        name: how to name the source in error messages (usually its path).
        max_pixels: refuse pictures with more pixels than this (decompression-bomb limit); 0 disables it.
        min_size, max_side: the size the caller will resize to (as in :func:`target_size`); when given, JPEGs are
            decoded at a reduced scale (1/2, 1/4, 1/8) that still covers it, which is much faster for large photos.

    Returns:
        A loaded RGB image.

    Raises:
        InputError: not an image, truncated or corrupt, or over the pixel limit.
    """
    if not data:
        raise InputError(f"{name}: empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(f"{name}: not a recognised image format") from None
    except (OSError, ValueError, SyntaxError) as e:  # Pillow plugins raise all three on malformed headers
        raise InputError(f"{name}: cannot read image header ({e})") from e
    w, h = img.size
    if max_pixels and w * h > max_pixels:
        raise InputError(
            f"{name}: {w}×{h} = {w * h:,} pixels is over the limit of {max_pixels:,} (decompression-bomb guard)",
            hint="raise it with --max-pixels if you trust this file",
        )
    if w < 1 or h < 1:
        raise InputError(f"{name}: image has no pixels ({w}×{h})")
    try:
        img.seek(0)  # animated GIF/WebP/APNG: first frame
        if (min_size or max_side) and img.format == "JPEG":
            tw, th = target_size(w, h, size=min_size, max_side=max_side)
            if tw < w and th < h:
                img.draft(None, (tw, th))  # libjpeg DCT scaling: never below the requested size
        img.load()
        ImageOps.exif_transpose(img, in_place=True)   # in place: no copy of every upright picture
        return _to_rgb(img)
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as e:
        raise InputError(f"{name}: corrupt or truncated image ({e})") from e


def _to_rgb(img: Image.Image) -> Image.Image:
    """Normalise any Pillow mode to RGB: transparency on white, high bit depths scaled to 8 bits."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np

        a = np.asarray(img)
        if mode == "F":
            a = a.astype(np.float64)
            scale = 255.0 if (a.size and float(np.nanmax(a)) <= 1.0) else 1.0
            a = np.nan_to_num(a * scale)
        elif mode == "I":
            a = a.astype(np.float64)
            if a.size and a.max() > 255:
                a = a / 257.0
        else:
            a = a.astype(np.float64) / 257.0
        gray = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
        return gray.convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def target_size(width: int, height: int, *, size: int = 0, max_side: int = 0, min_side: int = MIN_SIDE) -> tuple[int, int]:
    """The processing size of a picture.

    Args:
        width: original width.
        height: original height.
        size: scale so that the shorter side is this many pixels (0 keeps the original size).
        max_side: then shrink (never enlarge) so that the longer side is at most this (0: no cap).
        min_side: then enlarge so that neither side is under this.

    Returns:
        (width, height) to process at, aspect ratio kept (rounded to whole pixels).
    """
    w, h = float(width), float(height)
    if size > 0:
        s = size / min(w, h)
        w, h = w * s, h * s
    if max_side > 0 and max(w, h) > max_side:
        s = max_side / max(w, h)
        w, h = w * s, h * s
    if min_side > 0 and min(w, h) < min_side:
        s = min_side / min(w, h)
        w, h = w * s, h * s
    return max(1, round(w)), max(1, round(h))


def resize_image(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize with an antialiasing (Lanczos) filter; a no-op when the size already matches.

    Args:
        img: an RGB image.
        size: (width, height).

    Returns:
        The resized image.
    """
    if img.size == tuple(size):
        return img
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def load_image(
    data: bytes, *, name: str = "<image>", size: int = 0, max_side: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Decode and resize in one call (see :func:`decode_image` and :func:`target_size`).

    Args:
        data: encoded bytes.
        name: the source's name for error messages.
        size: shorter side to process at (0 keeps the original size).
        max_side: cap on the longer side (0: none).
        max_pixels: decompression-bomb limit.

    Returns:
        An RGB image at the processing size.
    """
    img = decode_image(data, name=name, max_pixels=max_pixels, min_size=size, max_side=max_side)
    return resize_image(img, target_size(*img.size, size=size, max_side=max_side))


def image_to_tensor(img: Image.Image) -> "torch.Tensor":
    """Convert an RGB Pillow image to a (3, H, W) float32 tensor in [0, 1].

    Args:
        img: an RGB image.

    Returns:
        A contiguous CPU tensor.
    """
    import numpy as np
    import torch

    a = np.asarray(img.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float().div_(255.0).contiguous()


def upload_frames(images: "list[np.ndarray]", device: "torch.device", pinned: "torch.Tensor | None" = None) -> "torch.Tensor":
    """Stack (H, W, 3) uint8 pictures into a (B, 3, H, W) float32 batch in [0, 1] on `device`, with the values of
    :func:`image_to_tensor` (uint8 / 255).

    The bytes travel as uint8 (a quarter of float's) and the conversion runs on the device. On CUDA they are copied
    from pinned memory: `pinned`, a reusable (N, H, W, 3) uint8 pinned buffer, when it fits (the caller must not
    reuse it before this batch's work has been waited for), else freshly pinned memory.

    Args:
        images: same-size (H, W, 3) uint8 arrays.
        device: where the batch goes.
        pinned: optional pinned buffer to stack into.

    Returns:
        A contiguous float32 tensor on `device`.
    """
    import numpy as np
    import torch

    n = len(images)
    if device.type == "cuda":
        if pinned is not None and n <= pinned.shape[0] and tuple(images[0].shape) == tuple(pinned.shape[1:]):
            host = pinned[:n]
            np.stack(images, out=host.numpy())
        else:
            host = torch.from_numpy(np.stack(images)).pin_memory()
        return frames_to_device(host, device)
    return frames_to_device(torch.from_numpy(np.stack(images)), device)


def frames_to_device(u8: "torch.Tensor", device: "torch.device") -> "torch.Tensor":
    """(B, H, W, 3) uint8 on the host (pinned: the copy is asynchronous) → (B, 3, H, W) float32 in [0, 1] on
    `device`, converted there (the second half of `upload_frames`, for callers that stacked the batch already)."""
    x = upload_async(u8, device)
    return x.permute(0, 3, 1, 2).contiguous().float().div_(255.0)


def tensor_to_image(t: "torch.Tensor") -> Image.Image:
    """Convert a (3, H, W) float tensor in [0, 1] (values outside are clamped) to an RGB Pillow image.

    Args:
        t: the picture, on any device.

    Returns:
        An 8-bit RGB image.
    """
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor, got {tuple(t.shape)}")
    a = t.detach().float().cpu().clamp(0.0, 1.0).mul(255.0).round().to(dtype=_uint8()).permute(1, 2, 0)
    return Image.fromarray(a.contiguous().numpy(), "RGB")


def _uint8() -> "torch.dtype":
    import torch

    return torch.uint8


def encode_image(img: Image.Image, fmt: str = "jpg", quality: int | None = None) -> bytes:
    """Encode an RGB image. No metadata is copied from the input (outputs are plain sRGB-assumed pictures).

    Args:
        img: the picture.
        fmt: ``jpg``, ``png`` or ``webp``.
        quality: 1–100 for jpg/webp (None: 92 for jpg, 90 for webp); ignored for png (lossless).

    Returns:
        The encoded bytes.

    The picture is encoded into an in-memory file with a descriptor (Linux ``memfd``), not into an ``io.BytesIO``:
    Pillow then encodes with ``encode_to_file``, which releases the GIL for the whole encode, where a BytesIO makes
    it hold the GIL throughout, and the pipeline's writer threads would encode one at a time
    (`scripts/probe_pillow_gil.py`). Same bytes either way.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    pil_name, _, default_q = FORMATS[fmt]
    q = default_q if quality is None else int(quality)
    if fmt == "jpg":
        kw: dict[str, object] = {"quality": q, "subsampling": 0 if q >= 90 else 2}
    elif fmt == "webp":
        kw = {"quality": q, "method": 4}
    else:
        kw = {"compress_level": 6}
    f = _memory_file()
    if isinstance(f, io.BytesIO):
        img.save(f, pil_name, **kw)
        return f.getvalue()
    f.seek(0)
    img.save(f, pil_name, **kw)
    n = f.tell()
    f.seek(0)
    data = f.read(n)
    _shrink(f, n)
    return data


def image_to_array(img: Image.Image) -> "np.ndarray":
    """A (H, W, 3) uint8 numpy copy of an RGB picture, made without holding the GIL where possible.

    ``np.asarray(img)`` goes through `Image.tobytes`, whose raw encoder holds the GIL for the whole copy (0.4–0.6 ms
    at 512² on the CPU box, and it got slower, not faster, on 2 threads). Here Pillow writes the pixels as a PPM into
    this thread's memfd (``encode_to_file``: GIL released) and they are read back into the array (``readinto``: GIL
    released). Same values; without memfd it is ``np.asarray``.
    """
    import numpy as np

    if img.mode != "RGB":
        raise ValueError(f"image_to_array takes RGB pictures, not {img.mode}")
    f = _memory_file()
    if isinstance(f, io.BytesIO):
        return np.asarray(img, dtype=np.uint8)
    w, h = img.size
    out = np.empty((h, w, 3), dtype=np.uint8)
    f.seek(0)
    img.save(f, "PPM")                       # "P6 <w> <h> 255" header, then the pixels: they are the file's tail
    n = f.tell()
    f.seek(n - out.nbytes)
    got = f.readinto(memoryview(out).cast("B"))
    _shrink(f, n)
    if got != out.nbytes:
        raise OSError(f"image_to_array: read {got} of {out.nbytes} bytes back")
    return out


_files = threading.local()
_KEEP_BYTES = 8 * 1024 * 1024   # a memfd that grew past this is emptied after use (its pages are memory)


def _shrink(f: io.BufferedRandom, n: int) -> None:
    if n > _KEEP_BYTES:
        f.truncate(0)


def _memory_file() -> io.BufferedRandom | io.BytesIO:
    """This thread's anonymous in-memory file with a descriptor (Linux ``memfd``; kept open and reused, so its pages
    stay allocated: creating one per picture cost ~0.25 ms), else a new BytesIO. A forked child makes its own."""
    if os.environ.get("MAMBAST_ENCODE_MEMFD", "1") == "0":   # diagnostic: the old BytesIO path (holds the GIL)
        return io.BytesIO()
    pid = os.getpid()
    f = getattr(_files, "f", None)
    if f is not None and _files.pid == pid and not f.closed:
        return f
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        try:
            _files.f = os.fdopen(memfd_create("mambast-encode", getattr(os, "MFD_CLOEXEC", 0)), "w+b")
            _files.pid = pid
            return _files.f
        except OSError:  # e.g. a seccomp profile without memfd_create
            pass
    return io.BytesIO()
