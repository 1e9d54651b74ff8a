"""bf16 engine output against the fp32 engine on real pictures with the bundled weights (issue 5: PSNR >= 40 dB).

Each of examples/content/*.jpg (resized to --size², the content side) is stylised with each of examples/style/*.jpg by
an fp32 engine and by bf16 engines with the scan's direction slots in fp32 and in bf16 (env MAMBAST_SCAN_SLOTS, read
at every call), and the PSNR of every bf16 picture against its fp32 one is reported (min / mean), with the time per
batch of each bf16 variant. Needs a CUDA GPU (on the CPU the engine computes in fp32 only).

    python scripts/check_precision.py --size 512 --out precision.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mambast_cli.engine.engine import Engine, psnr
from mambast_cli.io.images import image_to_tensor

ROOT = Path(__file__).resolve().parent.parent


def _load(path: Path, size: int | None) -> torch.Tensor:
    im = Image.open(path).convert("RGB")
    if size:
        im = im.resize((size, size), Image.BICUBIC)
    return image_to_tensor(im)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--weights", default=None, help="weights file (default: the bundled model)")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    ap.add_argument("--style-size", type=int, default=None, help="style short side (default: the engine's)")
    ap.add_argument("--device", default="cuda", help="cuda (cpu only to try the script: it computes fp32 there)")
    a = ap.parse_args()
    contents = torch.stack([_load(p, a.size) for p in sorted((ROOT / "examples/content").glob("*.jpg"))])
    styles = [_load(p, None) for p in sorted((ROOT / "examples/style").glob("*.jpg"))]

    def sync() -> None:
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run(precision: str, slots: str) -> tuple[list[torch.Tensor], float]:
        os.environ["MAMBAST_SCAN_SLOTS"] = slots
        eng = Engine(weights=a.weights, device=a.device, precision=precision, disk_cache=False)
        handles = [eng.encode_style(s, style_size=a.style_size) for s in styles]
        eng.stylize(contents, handles[0])                          # warm-up (tuning, graphs)
        sync()
        t0 = time.perf_counter()
        outs = [eng.stylize(contents, h) for h in handles]
        sync()
        return outs, (time.perf_counter() - t0) / len(handles) * 1e3

    ref, _ = run("fp32", "fp32")
    dev_name = torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device
    report: dict = {"device": dev_name, "torch": torch.__version__, "size": a.size, "contents": len(contents),
                    "styles": len(styles)}
    for slots in ("fp32", "bf16"):
        outs, ms = run("bf16", slots)
        vals = [psnr(r[i], o[i]) for r, o in zip(ref, outs) for i in range(len(contents))]
        report[f"bf16_slots_{slots}"] = {"psnr_min_db": round(min(vals), 2),
                                         "psnr_mean_db": round(float(np.mean(vals)), 2), "ms_per_batch": round(ms, 2)}
        print(f"bf16 engine, {slots} slots: PSNR vs fp32 min {min(vals):.2f} dB, mean {np.mean(vals):.2f} dB "
              f"over {len(vals)} pictures; {ms:.2f} ms per batch of {len(contents)}", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
