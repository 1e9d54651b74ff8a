"""RGB → YUV 4:2:0 on the engine's device, packed the way PyAV's ``VideoFrame.from_ndarray(..., "yuv420p")`` takes it.

Why: the encode thread used to convert each stylised RGB frame with swscale (6–7 ms per 1080p frame on the 2-core
CI box), holding the GIL for much of it, while the encoder (libx264) only needs the YUV planes. Converting on the GPU
costs a few elementwise kernels, halves the bytes copied back (1.5 instead of 3 per pixel) and leaves the encode
thread one copy into the frame's planes (`video.io.frame_from_yuv420`, ~0.5 ms) and the encoder itself.

The conversion is the one swscale does with ``interpolation="AREA"`` (which the RGB path of
:class:`mambast_cli.video.io.VideoWriter` uses too): full-range RGB in, the source's matrix and range out, chroma
as the mean of each 2×2 block. Checked against swscale in ``tests/test_video_yuv.py`` (within one code value).
"""
from __future__ import annotations

from typing import Any

__all__ = ["YUV_MATRICES", "supports", "yuv420_planes"]

#: (Kr, Kb) per swscale colorspace value (`video.io.rgb_matrix`): BT.709, FCC, BT.601, SMPTE 240M, BT.2020 (NCL)
YUV_MATRICES: dict[int, tuple[float, float]] = {
    1: (0.2126, 0.0722),
    4: (0.30, 0.11),
    5: (0.299, 0.114),
    7: (0.212, 0.087),
    9: (0.2627, 0.0593),
}


def supports(pix_fmt: str, matrix: int, width: int, height: int) -> bool:
    """Whether :func:`yuv420_planes` can produce the encoder's input for this output.

    Args:
        pix_fmt: the encoder's pixel format (only yuv420p).
        matrix: swscale colorspace value (`video.io.rgb_matrix`).
        width, height: encoded size (both even for 4:2:0).

    Returns:
        True or False.
    """
    return pix_fmt == "yuv420p" and matrix in YUV_MATRICES and width % 2 == 0 and height % 2 == 0


def yuv420_planes(rgb: Any, matrix: int, full_range: bool) -> Any:
    """Convert a batch of RGB pictures to packed 8-bit YUV 4:2:0.

    Args:
        rgb: (B, 3, H, W) float in [0, 1] (values outside are clamped), any device; H and W even.
        matrix: swscale colorspace value, a key of `YUV_MATRICES`.
        full_range: full (0–255) rather than limited (16–235 / 16–240) output range.

    Returns:
        (B, H * 3 // 2, W) uint8 on rgb's device: the Y plane (H rows), then U and V (H/2 × W/2 values each,
        laid out back to back over the remaining rows), as ``VideoFrame.from_ndarray(a, format="yuv420p")`` reads.
    """
    import torch
    import torch.nn.functional as F

    Bn, _, H, W = rgb.shape
    assert H % 2 == 0 and W % 2 == 0, (H, W)
    kr, kb = YUV_MATRICES[matrix]
    kg = 1.0 - kr - kb
    x = rgb.float().clamp(0.0, 1.0)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = kr * r + kg * g + kb * b                                   # (B, H, W) in [0, 1]
    # chroma of each 2×2 block: the mean of the four (linear, so it equals converting the mean colour)
    bm = F.avg_pool2d(torch.stack([b - y, r - y], dim=1), 2)        # (B, 2, H/2, W/2)
    cb, cr = bm[:, 0] / (2.0 * (1.0 - kb)), bm[:, 1] / (2.0 * (1.0 - kr))
    if full_range:
        y8, c_scale = y * 255.0, 255.0
    else:
        y8, c_scale = 16.0 + 219.0 * y, 224.0
    out = torch.empty((Bn, H * 3 // 2, W), dtype=torch.uint8, device=rgb.device)
    flat = out.view(Bn, -1)
    q = H * W // 4
    flat[:, : H * W] = _u8(y8).reshape(Bn, -1)
    flat[:, H * W : H * W + q] = _u8(128.0 + c_scale * cb).reshape(Bn, -1)
    flat[:, H * W + q :] = _u8(128.0 + c_scale * cr).reshape(Bn, -1)
    return out


def _u8(v: Any) -> Any:
    import torch

    return v.add(0.5).floor_().clamp_(0.0, 255.0).to(torch.uint8)
