"""Host-side cost per picture of the image pipeline's CPU steps (why pictures now travel to the GPU as uint8).

Times, single-threaded, each step `mambast stylize` runs per picture on the CPU: decode (`load_image`), the float
conversion in (`image_to_tensor`), the float → 8-bit conversion out (`tensor_to_image`), JPEG encoding and the
atomic write; and, for comparison, the uint8 path's host work (stacking a batch of 16 uint8 pictures).

    python scripts/probe_host_io.py [--size 512] [--repeats 50]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()

    import numpy as np
    import torch

    from mambast_cli.io import encode_image, image_to_tensor, load_image, tensor_to_image, write_atomic
    from mambast_cli.pipeline.bench import make_images

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        make_images(Path(d) / "in", 1, args.size)
        data = (Path(d) / "in" / "img00000.jpg").read_bytes()
        rows = []

        def t(name, fn):
            fn()
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                r = fn()
            rows.append((name, (time.perf_counter() - t0) / args.repeats * 1000))
            return r

        img = t("decode (load_image)", lambda: load_image(data, size=0, max_side=0, max_pixels=0))
        ten = t("image_to_tensor", lambda: image_to_tensor(img))
        out = t("tensor_to_image", lambda: tensor_to_image(ten))
        enc = t("encode_image jpg q95", lambda: encode_image(out, "jpg", 95))
        t("write_atomic (fsync)", lambda: write_atomic(os.path.join(d, "a.jpg"), enc, fsync=True))
        arr = np.asarray(img, dtype=np.uint8)
        t("uint8 path: np.stack of 16, per picture", lambda: np.stack([arr] * 16))
        rows[-1] = (rows[-1][0], rows[-1][1] / 16)
    print(f"{args.size}x{args.size}, torch {torch.__version__}, 1 thread, {os.cpu_count()} cores, mean of {args.repeats}")
    for name, ms in rows:
        print(f"  {name:42} {ms:7.2f} ms")


if __name__ == "__main__":
    main()
