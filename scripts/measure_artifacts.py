"""Streak and patch-grid scores (mambast_cli/train/artifacts.py) of models on held-out pairs, at the CLI's size.

Stylises the first C held-out contents × S held-out styles (the training split's hash, as MODEL.md's validation) at
`--size` (short side, then a centre crop to a square), with each weights file given, and prints the mean scores per
model, plus the content image passed through the model as its own style (the identity: artefacts of the weights
themselves) and a per-channel colour transfer (a baseline without any model artefact).

    python scripts/measure_artifacts.py mambast_cli/weights/default.safetensors OTHER.safetensors \\
        --content ../shared/data/train/content --style ../shared/data/train/style --contents 4 --styles 4

CPU is fine (about a minute per model at 4 × 4 and 512²).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mambast_cli.engine import Engine  # noqa: E402
from mambast_cli.io import image_to_tensor, load_image  # noqa: E402
from mambast_cli.train.artifacts import artifact_scores  # noqa: E402
from mambast_cli.train.data import list_images, split_holdout  # noqa: E402
from mambast_cli.train.losses import color_transfer  # noqa: E402


def _square(path: Path, size: int) -> torch.Tensor:
    img = image_to_tensor(load_image(path.read_bytes(), name=str(path), size=size))
    _, h, w = img.shape
    s = min(h, w)
    return img[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--content", required=True)
    ap.add_argument("--style", required=True)
    ap.add_argument("--contents", type=int, default=4)
    ap.add_argument("--styles", type=int, default=4)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    cs = split_holdout(list_images(Path(a.content)), 0.05)[1][:a.contents]
    ss = split_holdout(list_images(Path(a.style)), 0.05)[1][:a.styles]
    x = torch.stack([_square(p, a.size) for p in cs])
    styles = [image_to_tensor(load_image(p.read_bytes(), name=str(p))) for p in ss]
    print(f"{len(cs)} held-out contents x {len(ss)} held-out styles at {a.size}², torch {torch.__version__}")
    ref = x.repeat(len(ss), 1, 1, 1)
    ct = torch.cat([color_transfer(x, _square(p, a.size)[None].expand_as(x)) for p in ss]).clamp(0, 1)
    rows = [("colour transfer (no model)", artifact_scores(ct, ref))]
    for w in a.weights:
        t0 = time.perf_counter()
        eng = Engine(weights=w, device=a.device, disk_cache=False)
        outs = torch.cat(list(eng.stylize_many(x, [eng.encode_style(s) for s in styles])))
        ident = torch.cat([eng.stylize(x[i:i + 1], eng.encode_style(x[i])) for i in range(len(x))])
        rows.append((f"{Path(w).name}: stylised", artifact_scores(outs, ref)))
        rows.append((f"{Path(w).name}: identity", artifact_scores(ident, x)))
        print(f"  {w}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"{'output':48} {'streak ratio':>13} {'streak rms':>11} {'grid ratio':>11}")
    for name, s in rows:
        print(f"{name:48} {s['streak_ratio']:13.3f} {s['streak_rms']:11.4f} {s['grid_ratio']:11.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
