"""Measure temporal flicker of stylised video under three conditions, on CPU, and write small stills for the docs.

Conditions (spec §2.9):
  1. per-frame permutations: a new shuffle seed for every frame (what the official code does: it redraws the style
     token shuffle on every call),
  2. fixed permutations: one seed for the whole clip (mambast's default: one StyleHandle per video),
  3. fixed + TemporalSmoother(N) (``--smooth N``).
Scenes: a static shot with sensor noise, and a slow pan (2 px/frame) with light noise, both synthetic.
Metric: mean |out_t − out_{t−1}| / mean |in_t − in_{t−1}| (lower = steadier); for the pan also the motion-
compensated residual of the outputs (flicker/texture swimming not explained by the pan), relative to the input's.

    python scripts/measure_stability.py                          # tiny random model (runs anywhere, in seconds)
    python scripts/measure_stability.py --weights W.safetensors  # the real model (CPU: slow with the reference scan; --device cuda is fine)
Outputs: a table on stdout, --json-out results JSON, PNG stills in --stills (default docs/img/stability).
Random weights say nothing about looks; quote numbers only from a run with trained weights.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mambast_cli.video.stability import (  # noqa: E402
    DEFAULT_SMOOTH, TemporalSmoother, compensated_diff, flicker_ratio, pan_scene, static_scene, synthetic_canvas,
)


def load_model(weights: str | None):
    from mambast_cli.model import MambaST, tiny_config

    if weights:
        from mambast_cli.model.weights import load_model as lm

        return lm(weights, device="cpu", dtype=torch.float32).eval()
    torch.manual_seed(0)
    return MambaST(tiny_config()).eval()


def load_style(path: str | None, size: int) -> torch.Tensor:
    if path:
        from PIL import Image

        img = Image.open(path).convert("RGB")
        s = size / min(img.size)
        img = img.resize((max(16, round(img.width * s)), max(16, round(img.height * s))), Image.Resampling.LANCZOS)
        import numpy as np

        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255)
    c = synthetic_canvas(size, size, seed=7)
    yy = torch.arange(size).view(-1, 1).float()
    return (0.6 * c + 0.4 * (0.5 + 0.5 * torch.sin(yy / 3.0)).expand(3, size, size)).clamp(0, 1)


@torch.inference_mode()
def stylize(model, frames: torch.Tensor, style: torch.Tensor, *, per_frame_seed: bool, batch: int) -> torch.Tensor:
    """frames (T,3,H,W) → outputs (T,3,H,W) clamped to [0,1]."""
    outs = []
    ss0 = None
    mem = None
    for i in range(0, frames.shape[0], batch):
        x = frames[i:i + batch]
        cs = model.encode_content(x)
        if per_frame_seed:
            if mem is None:
                e, _, sgrid = model._embed(style[None])
                mem = (model.mamba.encoder_s(e).flatten(1, 2), sgrid)
            ys = []
            for b in range(x.shape[0]):   # a new permutation draw for every frame
                ss = model.prepare_style(mem[0], mem[1], cs.grid, seed=1000 + i + b)
                one = type(cs)(tokens=cs.tokens[b:b + 1], size=cs.size, grid=cs.grid,
                               embed=None if cs.embed is None else cs.embed[b:b + 1])
                ys.append(model.decode(one, ss))
            y = torch.cat(ys)
        else:
            if ss0 is None:
                ss0 = model.encode_style(style[None], grid=cs.grid, seed=0)
            y = model.decode(cs, ss0)
        outs.append(y.clamp(0, 1).float().cpu())
    return torch.cat(outs)


def save_still(path: Path, rows: list[tuple[str, torch.Tensor]], t: int) -> None:
    """One row per condition: frame t, frame t+1, and 4×|difference|."""
    import numpy as np
    from PIL import Image, ImageDraw

    tiles = []
    for name, fr in rows:
        d = ((fr[t + 1] - fr[t]).abs() * 4).clamp(0, 1)
        row = torch.cat([fr[t], fr[t + 1], d], dim=2)
        tiles.append(row)
    grid = torch.cat(tiles, dim=1)
    img = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    h = rows[0][1].shape[2]
    for k, (name, _) in enumerate(rows):
        draw.text((4, k * h + 4), name, fill=(255, 255, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", help="mambast weights (.safetensors); default: a tiny random model")
    ap.add_argument("--style", help="style image (default: a synthetic one)")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=144)
    ap.add_argument("--smooth", type=int, nargs="+", default=[2, DEFAULT_SMOOTH, 8], help="smoother N values to try")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--stills", default="docs/img/stability", help="folder for PNG stills ('' = none)")
    ap.add_argument("--json-out", help="write the results here")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model = load_model(a.weights).to(a.device)
    style = load_style(a.style, 256).to(a.device)
    scenes = {
        "static": static_scene(a.frames, a.height, a.width, noise=0.02),
        "pan": pan_scene(a.frames, a.height, a.width, speed=2, noise=0.01),
    }
    for sc in scenes.values():
        sc.frames = sc.frames.to(a.device)
    results = []
    for sname, sc in scenes.items():
        x = sc.frames.cpu()
        xd = sc.frames
        conds: list[tuple[str, torch.Tensor]] = [
            ("per-frame permutations", stylize(model, xd, style, per_frame_seed=True, batch=a.batch)),
        ]
        fixed = stylize(model, xd, style, per_frame_seed=False, batch=a.batch)
        conds.append(("fixed permutations", fixed))
        for n in a.smooth:
            sm = TemporalSmoother(n)
            conds.append((f"fixed + smooth {n}", torch.cat([sm(x[i:i + a.batch], fixed[i:i + a.batch])
                                                            for i in range(0, x.shape[0], a.batch)])))
        in_comp = compensated_diff(x, sc.dx) if sc.dx else None
        for name, y in conds:
            r = {"scene": sname, "condition": name, "flicker_ratio": round(flicker_ratio(x, y), 4)}
            if in_comp is not None:
                r["compensated_ratio"] = round(compensated_diff(y, sc.dx) / max(in_comp, 1e-12), 4)
            results.append(r)
        if a.stills:
            pick = [c for c in conds if c[0] in ("per-frame permutations", "fixed permutations")
                    or c[0] == f"fixed + smooth {DEFAULT_SMOOTH}"]
            save_still(Path(a.stills) / f"{sname}.png", [("input", x)] + pick, t=a.frames // 2)
    print(f"model: {'weights ' + a.weights if a.weights else 'tiny random model (numbers say nothing about looks)'}; "
          f"{a.frames} frames at {a.width}x{a.height}; {time.perf_counter() - t0:.1f}s")
    print(f"{'scene':8} {'condition':26} {'flicker ratio':>14} {'pan residual ratio':>19}")
    for r in results:
        comp = r.get("compensated_ratio")
        print(f"{r['scene']:8} {r['condition']:26} {r['flicker_ratio']:14.3f} {'' if comp is None else f'{comp:19.3f}'}")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"weights": a.weights, "frames": a.frames, "width": a.width,
                                                "height": a.height, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
