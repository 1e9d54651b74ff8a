"""The image pipeline's host-side ceiling: `mambast bench --folder` with a null GPU, on any machine.

Runs the CUDA engine's path of `run_plan` (uint8 pictures, staging buffers, the engine thread, the dispatcher, the
writers) with every device step replaced by a no-op: the "engine" returns the staged uint8 batch as its output.
What is left is what the host does per picture: read, decode, stack, hand-offs, JPEG encode, atomic write, events.
On the GPU host that is what must keep up with the GPU (issue 5: 1,000 pictures/s at 512²); here it shows what the
CPU side alone can do and where its time goes (`stages_s`).

    python scripts/bench_host_pipeline.py [--images 1000] [--size 512] [--decode-workers N] [--write-workers N] [--no-codecs]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class NullEngine:
    """Stands in for a CUDA Engine: returns its (B, H, W, 3) uint8 input as the stylised batch."""

    def __init__(self, batch: int) -> None:
        import torch

        self.device = torch.device("cpu")
        self.batch = batch
        self.stats: dict[str, int] = {}

    def max_batch(self, h: int, w: int) -> int:
        return self.batch

    def encode_style(self, image: Any, *, key: str | None = None, style_size: int | None = None) -> object:
        return object()

    def stylize(self, x: Any, handle: Any, *, alpha: float = 1.0, preserve_color: bool = False,
                on_device: bool = False) -> Any:
        return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--decode-workers", type=int, default=None)
    ap.add_argument("--write-workers", type=int, default=None)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--no-codecs", action="store_true",
                    help="decode returns one cached picture and encode a few bytes: what is left is the pipeline's own "
                         "Python (queues, hand-offs, events, file writes), the ceiling of one process")
    a = ap.parse_args()

    import torch

    from mambast_cli.pipeline import bench as pbench
    from mambast_cli.pipeline import run as prun

    # the CUDA path of run_plan with the device steps made no-ops (see the module docstring)
    prun._is_cuda = lambda d: True                                              # type: ignore[assignment]
    prun._pinned_empty = lambda n: torch.empty(n, dtype=torch.uint8)            # type: ignore[assignment]
    prun.frames_to_device = lambda u8, device: u8                               # type: ignore[assignment]
    prun._download = lambda out, torch_: out.numpy()                            # type: ignore[assignment]
    if a.no_codecs:
        from PIL import Image

        from mambast_cli.io.images import image_to_array

        pic = Image.new("RGB", (a.size, a.size), (90, 120, 200))
        arr = image_to_array(pic)
        prun._Runner._load = lambda self, data, src: pic                        # type: ignore[assignment]
        prun.image_to_array = lambda img: arr                                   # type: ignore[assignment]
        prun.encode_image = lambda img, fmt="jpg", quality=None: b"\xff\xd8 not encoded"  # type: ignore[assignment]
    if a.decode_workers or a.write_workers:
        real = prun.RunOptions

        def opts(**kw: Any) -> Any:
            kw.setdefault("decode_workers", a.decode_workers)
            kw.setdefault("write_workers", a.write_workers)
            return real(**kw)
        prun.RunOptions = opts                                                  # type: ignore[assignment]
        import mambast_cli.pipeline as pp

        pp.RunOptions = opts                                                    # type: ignore[assignment]
    import resource
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="mambast-host-bench-"))
    try:
        pbench.make_images(work / "in", a.images, a.size)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        row = pbench.folder_benchmark(NullEngine(a.batch), size=a.size, images=work / "in", workdir=work)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    row.pop("errors", None)
    row["cpus"] = os.cpu_count()
    n = row["ok"] + min(row["images"], 2 * a.batch)          # the run plus its warm-up
    row["cpu_ms_per_img"] = {"user": round((r1.ru_utime - r0.ru_utime) / n * 1e3, 2),
                             "sys": round((r1.ru_stime - r0.ru_stime) / n * 1e3, 2)}
    print(json.dumps(row))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(row, indent=1))
    return 0 if row["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
