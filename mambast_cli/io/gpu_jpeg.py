"""JPEG decoding on the GPU for the image pipeline: nvJPEG through torchvision (an optional extra), on by default.

Why: on the GPU host the decode threads cost ~2 ms of CPU per 512² JPEG and hand the GIL back and forth with the
encode threads; nvJPEG decodes a batch on the GPU in a fraction of that (issue 5 quotes 0.13 vs 4.6 ms per 512²
JPEG on an H100). The pipeline then reads only the file and its header on the CPU (`processed_size`) and the engine
thread decodes and resizes the whole batch on the device (`decode_resize`).

Pictures match the CPU path in size exactly (the header is read the way `decode_image` reads it, libjpeg's DCT
scaling included), not in every pixel value: nvJPEG's IDCT and an antialiased bicubic resize on the GPU stand in
for libjpeg and Pillow's Lanczos. A batch that nvJPEG refuses (CMYK, unusual sampling, a corrupt file) falls back
to the CPU path for its pictures (the pipeline does that). EXIF orientation is applied here, on the GPU, from the
orientation the header gave (`jpeg_header`): torchvision 0.26's CUDA decoder ignored ``apply_exif_orientation``
(measured on an H100: rotated files came out unrotated, 9 dB against the CPU path), so it is never asked to.
On by default wherever it can run (a CUDA engine and torchvision's nvJPEG op; ``MAMBAST_GPU_DECODE=0`` turns it
off, docs/cli.md). It was opt-in until session 8: on an H100 with 16 cores it raised a 512² folder's steady rate
from 359 to 484 pictures/s (session 7), but its start-up cost ~5 s more, and that was ``import torchvision.io``
alone (5.0–5.5 s: it imports the models, datasets and transforms too). The decoder is now loaded from
torchvision's image library without importing torchvision (`_load_image_ops`, 4 ms), the public import kept as
the fallback: warm-up 2.6 s against 2.3 s on the CPU path, and 504 against 219 pictures/s steady on the same
machine (BENCHMARKS.md, session 8).
"""
from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Any, Callable

from PIL import Image, UnidentifiedImageError

from mambast_cli.errors import InputError
from mambast_cli.io.images import target_size

__all__ = ["apply_orientation", "available", "decode_resize", "enabled", "is_jpeg", "jpeg_header", "processed_size"]

_ORIENTATION = 0x0112


def enabled() -> bool:
    """Whether GPU decoding may be used (the default; env ``MAMBAST_GPU_DECODE=0`` turns it off)."""
    return os.environ.get("MAMBAST_GPU_DECODE", "1") != "0"


def available() -> bool:
    """Whether nvJPEG decoding through torchvision can run here (it is the optional extra ``gpu-jpeg``): its image
    library loads and offers the batched CUDA decoder (see `_batch_decoder`)."""
    return _batch_decoder() is not None


# torchvision's ImageReadMode.RGB, and the schema of the op its `decode_jpeg` calls for a list of JPEGs on a CUDA device
_MODE_RGB = 3
_CUDA_OP_ARGS = ({"Tensor[]", "List[Tensor]"}, {"int"}, {"Device"})     # the list type prints either way


def _load_image_ops() -> Callable[[list, Any], list] | None:
    """torchvision's batched nvJPEG op, loaded from its image library alone, without importing torchvision.

    ``import torchvision.io`` took 5.0-5.5 s on a fresh GPU host (session 8, `scripts/probe_gpu_jpeg_startup.py`): it
    imports the models, datasets and transforms too. The decoder lives in one shared library
    (``torchvision/image*.so``) that registers ``torch.ops.image.*``; torchvision's own ``decode_jpeg`` calls
    ``decode_jpegs_cuda(tensors, mode, device)`` for a list on a CUDA device. Used only when the op has exactly that
    schema; None otherwise."""
    import importlib.machinery
    import importlib.util

    import torch

    try:
        spec = importlib.util.find_spec("torchvision")          # finds the package without running its __init__
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = [Path(d) / f"image{suffix}" for d in spec.submodule_search_locations
            for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    lib = next((p for p in libs if p.is_file()), None)
    if lib is None:
        return None
    try:
        torch.ops.load_library(str(lib))
        op = torch.ops.image.decode_jpegs_cuda
        args = tuple(str(a.type) for a in op.default._schema.arguments)
    except (OSError, RuntimeError, AttributeError):           # built for another torch, or no CUDA decoder in it
        return None
    if len(args) != len(_CUDA_OP_ARGS) or not all(a in ok for a, ok in zip(args, _CUDA_OP_ARGS)):
        return None
    return lambda tensors, device: op(tensors, _MODE_RGB, torch.device(device))


def _import_torchvision() -> Callable[[list, Any], list] | None:
    """The same through torchvision's public `decode_jpeg` (the slow import), for versions whose op differs."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception:  # not installed, or built for another torch
        return None
    return lambda tensors, device: decode_jpeg(tensors, mode=ImageReadMode.RGB, apply_exif_orientation=False,
                                               device=device)


@functools.lru_cache(maxsize=1)
def _batch_decoder() -> Callable[[list, Any], list] | None:
    """decode(list of uint8 JPEG tensors, device) -> list of (3, H, W) uint8 tensors on the device, or None when
    torchvision cannot decode on the GPU here. Found once per process; the fast loader first."""
    return _load_image_ops() or _import_torchvision()


def is_jpeg(data: bytes) -> bool:
    """JPEG by its first bytes (SOI marker followed by another marker)."""
    return data[:3] == b"\xff\xd8\xff"


def processed_size(data: bytes, *, name: str = "<image>", size: int = 0, max_side: int = 0,
                   max_pixels: int = 0) -> tuple[int, int]:
    """The (height, width) the CPU path (`load_image`) would give this JPEG, from its header only (see
    `jpeg_header`, which also returns the EXIF orientation)."""
    h, w, _ = jpeg_header(data, name=name, size=size, max_side=max_side, max_pixels=max_pixels)
    return h, w


def jpeg_header(data: bytes, *, name: str = "<image>", size: int = 0, max_side: int = 0,
                max_pixels: int = 0) -> tuple[int, int, int]:
    """The (height, width) the CPU path (`load_image`) would give this JPEG, and its EXIF orientation, from its header
    only.

    Args:
        data: the JPEG's bytes.
        name: the source's name for error messages.
        size: shorter side to process at (0 keeps the original size).
        max_side: cap on the longer side (0: none).
        max_pixels: decompression-bomb limit (0: none).

    Returns:
        (height, width, orientation): the size after orientation, DCT scaling and resizing; the EXIF orientation
        (1…8, 1 when absent or unreadable) that `decode_resize` must apply.

    Raises:
        InputError: not a readable JPEG header, or over the pixel limit.
    """
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{name}: cannot read image header ({e})") from e
    if max_pixels and w * h > max_pixels:
        raise InputError(f"{name}: {w}×{h} = {w * h:,} pixels is over the limit of {max_pixels:,} "
                         "(decompression-bomb guard)", hint="raise it with --max-pixels if you trust this file")
    if w < 1 or h < 1:
        raise InputError(f"{name}: image has no pixels ({w}×{h})")
    if size or max_side:                      # what decode_image's draft() would do to the decoded size
        tw, th = target_size(w, h, size=size, max_side=max_side)
        if tw < w and th < h:
            img.draft(None, (tw, th))          # header only: sets the DCT scale, decodes nothing
            w, h = img.size
    try:
        orientation = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # a broken EXIF block: the CPU path ignores it too
        orientation = 1
    if orientation not in range(1, 9):        # exif_transpose ignores values outside 1…8
        orientation = 1
    if orientation in (5, 6, 7, 8):           # transposed or rotated by 90°: width and height swap
        w, h = h, w
    tw, th = target_size(w, h, size=size, max_side=max_side)
    return th, tw, orientation


def apply_orientation(x: Any, orientation: int) -> Any:
    """Turn a decoded (C, H, W) picture upright the way Pillow's `exif_transpose` does for an EXIF orientation
    (2: mirrored, 3: rotated 180°, 4: flipped, 5: transposed, 6: rotated 90° clockwise to view, 7: transversed,
    8: rotated 90° counter-clockwise to view). Returns a view; 1 and unknown values return ``x``."""
    import torch

    if orientation == 2:
        return x.flip(-1)
    if orientation == 3:
        return x.flip(-2, -1)
    if orientation == 4:
        return x.flip(-2)
    if orientation == 5:
        return x.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(x, -1, dims=(-2, -1))
    if orientation == 7:
        return x.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return torch.rot90(x, 1, dims=(-2, -1))
    return x


def decode_resize(datas: list[bytes], hw: tuple[int, int], device: Any,
                  orientations: list[int] | None = None) -> Any:
    """Decode JPEGs on the GPU (nvJPEG), turn them upright, and resize them to one size.

    Args:
        datas: the files' bytes.
        hw: the (height, width) every picture is brought to (see `jpeg_header`).
        device: a CUDA device.
        orientations: each file's EXIF orientation (`jpeg_header`); None: read from the headers here.

    Returns:
        (B, 3, H, W) float32 in [0, 1] on the device, quantised to 8-bit steps like the CPU path's pictures.

    Raises:
        Exception: whatever torchvision raises for a batch it cannot decode (the caller falls back to the CPU).
    """
    import torch
    import torch.nn.functional as F

    decode = _batch_decoder()
    if decode is None:
        raise RuntimeError("torchvision cannot decode JPEGs on the GPU here (install the gpu-jpeg extra)")
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    if orientations is None:
        orientations = [jpeg_header(d)[2] for d in datas]
    imgs = decode(tensors, device)
    h, w = hw
    # pictures of one decoded size are converted (and resized) together: the engine thread runs this, and every
    # PyTorch call needs the GIL, which the decode and write threads hold much of the time
    groups: dict[tuple[int, ...], list[int]] = {}
    upright = [apply_orientation(im, o) for im, o in zip(imgs, orientations)]
    for i, im in enumerate(upright):
        groups.setdefault(tuple(im.shape), []).append(i)
    if len(groups) == 1 and tuple(upright[0].shape[-2:]) == (h, w):      # the usual case: one size, no resize
        return torch.stack(upright).float().div_(255.0)
    out = torch.empty((len(imgs), 3, h, w), dtype=torch.float32, device=device)
    for shape, idx in groups.items():
        x = torch.stack([upright[i] for i in idx]).float()
        if tuple(shape[-2:]) != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
            x = x.clamp_(0.0, 255.0).round_()
        if len(idx) == len(imgs):
            out = x
        else:
            out[torch.tensor(idx, device=device)] = x
    return out.div_(255.0)
