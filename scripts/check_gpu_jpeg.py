"""GPU check of JPEG decoding with nvJPEG (mambast_cli/io/gpu_jpeg.py) against the CPU decoder: sizes, pixels, speed.

For JPEGs of several kinds (baseline, progressive, 4:4:4 and 4:2:0, grayscale, CMYK, EXIF-rotated, large ones that
the CPU path decodes with DCT scaling), compares `decode_resize` on the GPU with `load_image` on the CPU: the same
size always, the pixels by PSNR; kinds nvJPEG refuses are listed (the pipeline falls back to the CPU for them).
Then times a batch of 64 512² JPEGs both ways.

    python scripts/check_gpu_jpeg.py            (needs CUDA and torchvision)
"""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _make(kind: str, w: int, h: int, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    img = Image.fromarray(np.clip(np.asarray(small, dtype=np.int16) + rng.integers(-10, 10, (h, w, 3)), 0, 255)
                          .astype(np.uint8))
    buf = io.BytesIO()
    kw: dict = {"quality": 90}
    if kind == "progressive":
        kw["progressive"] = True
    if kind == "444":
        kw["subsampling"] = 0
    if kind == "gray":
        img = img.convert("L")
    if kind == "cmyk":
        img = img.convert("CMYK")
    if kind.startswith("exif"):
        exif = Image.Exif()
        exif[0x0112] = int(kind[4:])
        kw["exif"] = exif.tobytes()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def main() -> int:
    import torch

    from mambast_cli.io import load_image
    from mambast_cli.io.gpu_jpeg import available, decode_resize, processed_size

    if not torch.cuda.is_available() or not available():
        print("needs CUDA and torchvision", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    bad = 0
    print("kind                size       processed    PSNR vs CPU (dB)")
    for kind, (w, h) in [("420", (640, 480)), ("444", (640, 480)), ("progressive", (640, 480)), ("gray", (640, 480)),
                         ("cmyk", (640, 480)), ("exif6", (640, 480)), ("exif3", (640, 480)), ("420", (4000, 3000)),
                         ("420", (513, 511)), ("exif8", (1999, 1001))]:
        data = _make(kind, w, h, seed=w + h)
        hw = processed_size(data, size=512, max_side=2048)
        ref = np.asarray(load_image(data, size=512, max_side=2048), dtype=np.float64)
        try:
            x = decode_resize([data], hw, dev)[0].permute(1, 2, 0).cpu().double().numpy() * 255
        except Exception as e:  # the pipeline falls back to the CPU for these
            print(f"{kind:18} {w}x{h:<6} {hw}   refused by nvJPEG: {type(e).__name__}: {str(e)[:60]}")
            continue
        if x.shape != ref.shape:
            bad += 1
            print(f"{kind:18} {w}x{h:<6} {hw}   SIZE MISMATCH {x.shape} vs {ref.shape}")
            continue
        mse = float(np.mean((x - ref) ** 2))
        psnr = 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
        bad += psnr < 30
        print(f"{kind:18} {w}x{h:<6} {hw}   {psnr:6.1f}")
    datas = [_make("420", 512, 512, seed=i) for i in range(64)]
    decode_resize(datas, (512, 512), dev)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        decode_resize(datas, (512, 512), dev)
    torch.cuda.synchronize()
    gpu_ms = (time.perf_counter() - t0) / 5 / 64 * 1e3
    t0 = time.perf_counter()
    for d in datas:
        np.asarray(load_image(d, size=512, max_side=2048))
    cpu_ms = (time.perf_counter() - t0) / 64 * 1e3
    print(f"512² JPEG, batch of 64: GPU {gpu_ms:.3f} ms per picture (decode + to float), CPU one thread {cpu_ms:.2f} ms")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
