"""Where nvJPEG's start-up goes (session 7: a 512² folder with `MAMBAST_GPU_DECODE=1` warmed up in 6.8 s against
1.9 s on the CPU path, which makes GPU decoding pay only from several thousand pictures on).

Times, in one fresh process: the CUDA context, loading torchvision's nvJPEG op without importing torchvision
(session 8; session 7's `import torchvision.io` took 5.5 s), the first `decode_resize` of one JPEG, the first batch
of 64, a second batch of 64 (steady state), then the full `import torchvision.io` for comparison. Run on a GPU host:

    python scripts/probe_gpu_jpeg_startup.py --size 512

Prints one line per step (seconds). Needs torchvision with CUDA JPEG decoding.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    datas = []
    for i in range(2 * a.batch + 1):
        arr = rng.integers(0, 255, (a.size, a.size, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=90)
        datas.append(buf.getvalue())

    def step(label: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        print(f"{label:<40} {time.perf_counter() - t0:8.3f} s", flush=True)

    t0 = time.perf_counter()
    import torch
    print(f"{'import torch':<40} {time.perf_counter() - t0:8.3f} s", flush=True)
    dev = torch.device("cuda")
    step("CUDA context (torch.zeros on the GPU)", lambda: torch.zeros(1, device=dev))
    from mambast_cli.io import gpu_jpeg
    from mambast_cli.io.gpu_jpeg import decode_resize

    step("load the nvJPEG op alone (_load_image_ops)", lambda: print(" found:", gpu_jpeg._load_image_ops() is not None))
    hw = (a.size, a.size)
    step("first decode_resize, 1 JPEG", lambda: decode_resize(datas[:1], hw, dev))
    step(f"first batch of {a.batch}", lambda: decode_resize(datas[1:a.batch + 1], hw, dev))
    step(f"second batch of {a.batch}", lambda: decode_resize(datas[a.batch + 1:], hw, dev))
    step("import torchvision.io after all (what session 7 paid)", lambda: __import__("torchvision.io"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
