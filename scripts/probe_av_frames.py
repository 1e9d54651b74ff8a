"""Cost of building a PyAV VideoFrame from a 1080p array: PyAV's from_ndarray vs our plane copies (video/io.py).

    python scripts/probe_av_frames.py [--repeats 30]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args()
    import av
    import numpy as np

    from mambast_cli.video.io import frame_from_rgb, frame_from_yuv420

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    yuv = rng.integers(0, 256, (1620, 1920), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")

    def t(name: str, fn) -> None:
        fn()
        t0 = time.perf_counter()
        for _ in range(a.repeats):
            fn()
        print(f"  {name:45} {(time.perf_counter() - t0) / a.repeats * 1e3:7.2f} ms")

    print(f"1920x1080, PyAV {av.__version__}, mean of {a.repeats}")
    t("VideoFrame.from_ndarray(rgb24)", lambda: av.VideoFrame.from_ndarray(rgb, format="rgb24"))
    t("frame_from_rgb (numpy copy into the plane)", lambda: frame_from_rgb(rgb))
    t("VideoFrame.from_ndarray(yuv420p)", lambda: av.VideoFrame.from_ndarray(yuv, format="yuv420p"))
    t("frame_from_yuv420", lambda: frame_from_yuv420(yuv))
    t("swscale rgb24 -> yuv420p (AREA)", lambda: frame.reformat(format="yuv420p", interpolation="AREA"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
