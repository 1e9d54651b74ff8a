"""Does Pillow's JPEG encoding run in parallel across threads? It depends on where it writes.

Pillow's `ImageFile._save` encodes into a file that has a descriptor with ``encoder.encode_to_file``, which releases
the GIL for the whole encode; into anything else (``io.BytesIO``) it calls ``encoder.encode(bufsize)`` in a loop,
which holds the GIL (Pillow's src/encode.c: only `_encode_to_file` enters an ImagingSection). Decoding releases it
either way. This probe encodes the same 512² pictures on 1 and on N threads into a BytesIO and into an in-memory
file with a descriptor (`mambast_cli.io.images.encode_image`'s way since session 6), and reports pictures/s.

    python scripts/probe_pillow_gil.py [--threads 2] [--size 512] [--n 200]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _bytesio(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, subsampling=0)
    return buf.getvalue()


def main() -> int:
    from mambast_cli.io.images import encode_image

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--n", type=int, default=200)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((a.size, a.size), Image.BICUBIC)
    arr = (np.asarray(small, dtype=np.int16) + rng.integers(-12, 12, (a.size, a.size, 3))).clip(0, 255)
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    ways = {"BytesIO (holds the GIL)": _bytesio,
            "encode_image (file descriptor)": lambda im: encode_image(im, "jpg", 92)}
    assert ways["BytesIO (holds the GIL)"](img) == ways["encode_image (file descriptor)"](img), "different bytes"
    print(f"{a.size}² JPEG q92 4:4:4, {a.n} pictures, {os.cpu_count()} CPUs, Pillow {Image.__version__}")
    for name, fn in ways.items():
        for threads in (1, a.threads):
            with ThreadPoolExecutor(threads) as pool:    # the threads live on, as the pipeline's writers do
                for _ in range(2):                       # the first round warms up
                    t0 = time.perf_counter()
                    list(pool.map(fn, [img] * a.n))
                    dt = time.perf_counter() - t0
            print(f"  {name:32s} {threads:2d} thread(s): {a.n / dt:7.1f} pictures/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
