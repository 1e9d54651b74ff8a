"""Measure temporal flicker of stylised video under three conditions, on CPU, and write a still + JSON for the docs.

Conditions (spec §2.9):
  1. per-frame permutations: a new shuffle seed for every frame (what the official code does: it redraws the style
     token shuffle on every call),
  2. fixed permutations: one seed for the whole clip (mambast's default: one StyleHandle per video),
  3. fixed + TemporalSmoother(N) (``--smooth N``; N = the default and a few others, post-processing only).
Scenes, made from a real photo (default examples/content/landscape.jpg):
  static: one crop, fresh Gaussian sensor noise (σ = 3/255) on every frame;
  pan:    a window sliding 1 px/frame across the photo, same noise.
Metrics (lower = steadier):
  flicker_ratio      mean |out_t − out_{t−1}| / mean |in_t − in_{t−1}|;
  pan_residual_ratio (pan only) the same after undoing the known pan: change the motion does not explain
                     (flicker, texture swimming; also lag/ghosting of a smoother that holds the old picture);
  change_vs_fixed    (smoothed only) mean |smoothed − unsmoothed fixed output|: how much the smoother alters frames.

The content encoding is computed once per scene and shared by all conditions; the style is encoded once; the
per-frame condition re-lays the cached style memory with a new seed per frame (cheap) and decodes in batches.
With the bundled weights at 160×96 × 16 frames this takes about 2–4 minutes on one CPU thread.

    python scripts/measure_stability.py                          # bundled trained weights, writes docs/img/stability.{jpg,json}
    python scripts/measure_stability.py --tiny --stills '' --json-out ''   # tiny random model: a smoke test in seconds
Random weights say nothing about looks; quote numbers only from a run with trained weights.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mambast_cli.video.stability import (  # noqa: E402
    DEFAULT_SMOOTH, Scene, TemporalSmoother, compensated_diff, flicker_ratio, pan_scene, static_scene,
)


def cpu_name() -> str:
    """The CPU model name (Linux /proc/cpuinfo), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_picture(path: str, shorter: int = 0) -> torch.Tensor:
    """Read an image as (3, H, W) float [0, 1]; ``shorter`` > 0 resizes its shorter side to that (Lanczos)."""
    import numpy as np
    from PIL import Image

    img = Image.open(path).convert("RGB")
    if shorter and min(img.size) != shorter:
        s = shorter / min(img.size)
        img = img.resize((max(16, round(img.width * s)), max(16, round(img.height * s))), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255)


def load_model(weights: str | None, tiny: bool) -> tuple[torch.nn.Module, str, str | None]:
    """The model, a printable name for it, and its weights id (sha256) if any."""
    from mambast_cli.model import MambaST, tiny_config
    from mambast_cli.model.weights import default_weights_path, load_model as lm, weights_id

    if tiny:
        torch.manual_seed(0)
        return MambaST(tiny_config()).eval(), "tiny random model (numbers say nothing)", None
    path = weights or default_weights_path()
    if path is None:
        raise SystemExit("no bundled weights found; pass --weights or --tiny")
    return lm(path, device="cpu", dtype=torch.float32).eval(), Path(path).name, weights_id(path)


@torch.inference_mode()
def stylize_conditions(model, frames: torch.Tensor, style: torch.Tensor, *, batch: int, seed: int = 0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stylise a clip with fixed permutations and with a new permutation draw per frame.

    Args:
        model: MambaST.
        frames: (T, 3, H, W) float [0, 1].
        style: (3, Hs, Ws) float [0, 1].
        batch: frames per forward pass.
        seed: the fixed condition's seed (frame t of the per-frame condition uses seed + 1000 + t).

    Returns:
        (per_frame, fixed) outputs, each (T, 3, H, W) clamped to [0, 1].
    """
    from dataclasses import replace

    from mambast_cli.model.mambast import StyleBlockTensors

    e, _, sgrid = model._embed(style[None])
    memory = model.mamba.encoder_s(e).flatten(1, 2)                  # encoded once, shared by both conditions
    fixed_ss = None
    per, fix = [], []
    for i in range(0, frames.shape[0], batch):
        x = frames[i:i + batch]
        cs = model.encode_content(x)                                  # shared by both conditions
        if fixed_ss is None:
            fixed_ss = model.prepare_style(memory, sgrid, cs.grid, seed=seed)
        fix.append(model.decode(cs, fixed_ss).clamp(0, 1))
        draws = [model.prepare_style(memory, sgrid, cs.grid, seed=seed + 1000 + i + b) for b in range(x.shape[0])]
        blocks = [StyleBlockTensors(torch.cat([d.blocks[k].u for d in draws]),
                                    torch.cat([d.blocks[k].delta for d in draws]),
                                    torch.cat([d.blocks[k].B for d in draws])) for k in range(len(draws[0].blocks))]
        ss = replace(draws[0], memory=memory.expand(len(draws), -1, -1), seed=None, blocks=blocks)  # S == B
        per.append(model.decode(cs, ss).clamp(0, 1))
    return torch.cat(per).float(), torch.cat(fix).float()


def smooth_clip(x: torch.Tensor, y: torch.Tensor, n: int, batch: int) -> torch.Tensor:
    """Run TemporalSmoother(n) over a clip in batches, as the video job does."""
    sm = TemporalSmoother(n)
    return torch.cat([sm(x[i:i + batch], y[i:i + batch]) for i in range(0, x.shape[0], batch)])


def save_still(path: Path, scenes: list[tuple[str, Scene, list[tuple[str, torch.Tensor]]]], t: int,
               quality: int = 82) -> int:
    """One JPEG: per scene a row of frame t (input, then each condition) and a row of 4×|frame t − frame t−1|.

    Returns:
        The file size in bytes.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    label_h = 14
    tiles = []
    for _, sc, conds in scenes:
        cols = [("input", sc.frames)] + conds
        row = torch.cat([c[t] for _, c in cols], dim=2)
        diff = torch.cat([((c[t] - c[t - 1]).abs() * 4).clamp(0, 1) for _, c in cols], dim=2)
        tiles += [row, diff]
    _, h, w = tiles[0].shape
    grid = torch.cat(tiles, dim=1)
    arr = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    img = Image.new("RGB", (w, grid.shape[1] + label_h * len(tiles)), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    tile_w = sc.frames.shape[-1]
    names = ["input"] + [n for n, _ in scenes[0][2]]
    y = 0
    for k in range(len(tiles)):
        sname = scenes[k // 2][0]
        for j, n in enumerate(names):
            text = f"{sname}: {n}" if k % 2 == 0 else f"{sname}: 4x|frame diff|"
            draw.text((j * tile_w + 3, y + 2), text if j == 0 or k % 2 == 0 else "4x|diff|", fill=(235, 235, 235))
        y += label_h
        img.paste(Image.fromarray(arr[k * h:(k + 1) * h]), (0, y))
        y += h
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=quality, optimize=True)
    return path.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", help="weights (.safetensors); default: the bundled mambast_cli/weights/default.safetensors")
    ap.add_argument("--tiny", action="store_true", help="a tiny random model instead (smoke test)")
    ap.add_argument("--content", default=str(ROOT / "examples/content/landscape.jpg"))
    ap.add_argument("--style", default=str(ROOT / "examples/style/starry_night.jpg"))
    ap.add_argument("--style-size", type=int, default=0, help="shorter side of the style (0: as stored)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--noise", type=float, default=3 / 255, help="sensor noise σ per frame (both scenes)")
    ap.add_argument("--speed", type=int, default=1, help="pan speed, px/frame")
    ap.add_argument("--smooth", type=int, nargs="+", default=sorted({2, DEFAULT_SMOOTH, 8}), help="smoother N values")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: shared machines)")
    ap.add_argument("--stills", default=str(ROOT / "docs/img/stability.jpg"), help="JPEG still ('' = none)")
    ap.add_argument("--json-out", default=str(ROOT / "docs/img/stability.json"), help="results JSON ('' = none)")
    a = ap.parse_args()
    if a.frames < 3:
        raise SystemExit("--frames must be >= 3")
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model, model_name, wid = load_model(a.weights, a.tiny)
    style = load_picture(a.style, a.style_size)
    photo = load_picture(a.content)
    H, W = a.height, a.width
    need_w = W + a.speed * (a.frames - 1)
    if photo.shape[1] < H or photo.shape[2] < need_w:   # scale the photo up just enough
        photo = load_picture(a.content, max(H, round(min(photo.shape[1:]) * need_w / photo.shape[2]) + 1))
    y0 = (photo.shape[1] - H) // 2
    x0 = (photo.shape[2] - need_w) // 2
    scenes = {
        "static": static_scene(a.frames, H, W, noise=a.noise, seed=1, base=photo[:, y0:, x0:]),
        "pan": pan_scene(a.frames, H, W, speed=a.speed, noise=a.noise, seed=1, base=photo[:, y0:, x0:]),
    }
    results = []
    stills = []
    for sname, sc in scenes.items():
        x = sc.frames
        ts = time.perf_counter()
        per, fixed = stylize_conditions(model, x, style, batch=a.batch)
        conds: list[tuple[str, torch.Tensor]] = [("per-frame permutations", per), ("fixed permutations", fixed)]
        for n in a.smooth:
            conds.append((f"fixed + smooth {n}", smooth_clip(x, fixed, n, a.batch)))
        in_comp = compensated_diff(x, sc.dx) if sc.dx else None
        for name, y in conds:
            r = {"scene": sname, "condition": name, "flicker_ratio": round(flicker_ratio(x, y), 4)}
            if in_comp is not None:
                r["pan_residual_ratio"] = round(compensated_diff(y, sc.dx) / max(in_comp, 1e-12), 4)
            if name.startswith("fixed + smooth"):
                r["change_vs_fixed"] = round(float((y - fixed).abs().mean()), 5)
            results.append(r)
        stills.append((sname, sc, [c for c in conds if c[0] in ("per-frame permutations", "fixed permutations",
                                                                 f"fixed + smooth {DEFAULT_SMOOTH}")]))
        print(f"{sname}: stylised {a.frames} frames x 2 conditions in {time.perf_counter() - ts:.1f}s", flush=True)
    secs = time.perf_counter() - t0
    print(f"model: {model_name}; {a.frames} frames at {W}x{H}; noise {a.noise:.4f}; pan {a.speed} px/frame; "
          f"{a.threads} thread(s); {secs:.1f}s")
    print(f"{'scene':8} {'condition':24} {'flicker ratio':>14} {'pan residual':>13} {'change vs fixed':>16}")
    for r in results:
        pr, cv = r.get("pan_residual_ratio"), r.get("change_vs_fixed")
        print(f"{r['scene']:8} {r['condition']:24} {r['flicker_ratio']:14.3f} "
              f"{'' if pr is None else f'{pr:.3f}':>13} {'' if cv is None else f'{cv:.4f}':>16}")
    if a.stills:
        size = save_still(Path(a.stills), stills, t=a.frames // 2)
        print(f"still: {a.stills} ({size // 1024} KB)")
    if a.json_out:
        meta = {"date": _dt.date.today().isoformat(), "cpu": cpu_name(), "threads": a.threads,
                "torch": torch.__version__, "weights": model_name, "weights_sha256": wid,
                "content": Path(a.content).name, "style": Path(a.style).name, "style_size": list(style.shape[1:]),
                "frames": a.frames, "width": W, "height": H, "noise_sigma": round(a.noise, 5),
                "pan_px_per_frame": a.speed, "default_smooth": DEFAULT_SMOOTH, "seconds": round(secs, 1),
                "results": results}
        Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json_out).write_text(json.dumps(meta, indent=1) + "\n")
        print(f"results: {a.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
