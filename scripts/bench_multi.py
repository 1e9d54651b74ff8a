"""Multi-GPU scaling of ``mambast stylize --devices``: images/s at 512² with 1, 2, 4 ... GPUs of one host.

Random-weight full-size model (official sizes; speed only, the pictures mean nothing) saved to a temporary file,
a synthetic folder of 512×512 JPEGs (smooth random pictures, realistic file sizes), one style. For each GPU count
it runs the real multi-worker path (``run_plan_multi``: spawn, style shared through the disk cache, work stealing,
atomic writes) into a fresh output folder and reports
  - wall img/s: all outputs / the whole run (worker start and model load included),
  - steady img/s: outputs between the 10th and the 95th percentile of completion times / that time span
    (what a long run converges to), and its scaling against the 1-GPU row (target ≥ 0.9× linear).
A row "1 (in-process)" runs plain ``run_plan`` on cuda:0 for reference (no worker process).

    python scripts/bench_multi.py                       # every visible GPU count among 1,2,4,8; 2000 images
    python scripts/bench_multi.py --gpus 1,2 --images 1000 --precision bf16
Prints a compact table and writes --json-out (default bench_multi.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mambast_cli.pipeline.bench import make_images, steady_rate  # noqa: E402  (shared with `mambast bench --folder`)


def run_once(label: str, devices: list[str] | None, in_dir: Path, style: Path, out_dir: Path,
             engine_kwargs: dict[str, Any], opts: Any, task_size: int) -> dict[str, Any]:
    from mambast_cli.pipeline import create_engine, plan_jobs, run_plan
    from mambast_cli.pipeline.multi import run_plan_multi

    plan = plan_jobs([str(in_dir)], [str(style)], out_dir)
    times: list[float] = []
    errors: list[str] = []

    def on_event(ev: Any) -> None:
        if ev.kind == "ok":
            times.append(time.perf_counter())
        elif ev.kind == "error":
            errors.append(f"{ev.input}: {ev.message}")

    t0 = time.perf_counter()
    if devices is None:
        engine = create_engine(device="cuda:0", **engine_kwargs)
        report = run_plan(plan, engine, opts, on_event=on_event)
        del engine
    else:
        report = run_plan_multi(plan, devices, engine_kwargs, opts, on_event=on_event, task_size=task_size)
    wall = time.perf_counter() - t0
    return {"label": label, "gpus": 1 if devices is None else len(devices), "ok": report.ok, "failed": report.failed,
            "wall_s": round(wall, 3), "wall_img_s": round(report.ok / wall, 2), "steady_img_s": round(steady_rate(times), 2),
            "first_output_s": round(times[0] - t0, 3) if times else None, "batch_sizes": report.batch_sizes,
            "errors": errors[:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", default="", help="comma-separated GPU counts (default: 1,2,4,8 up to the visible count)")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--task-size", type=int, default=8)
    ap.add_argument("--workers-per-gpu", default="1",
                    help="comma-separated worker processes per GPU to try, e.g. 1,2,3 (each count gets its rows)")
    ap.add_argument("--weights", default=None, help="weights file (default: random full-size weights)")
    ap.add_argument("--no-in-process", action="store_true", help="skip the in-process 1-GPU reference row")
    ap.add_argument("--json-out", default="bench_multi.json")
    args = ap.parse_args()

    import torch

    from mambast_cli.model import MambaST, MambaSTConfig
    from mambast_cli.model.weights import save_weights
    from mambast_cli.pipeline import RunOptions

    n_vis = torch.cuda.device_count()
    if n_vis == 0:
        sys.exit("bench_multi: no CUDA device visible")
    counts = [int(c) for c in args.gpus.split(",") if c.strip()] if args.gpus else [c for c in (1, 2, 4, 8) if c <= n_vis]
    counts = [c for c in counts if c <= n_vis]
    work = Path(tempfile.mkdtemp(prefix="bench_multi_"))
    os.environ["MAMBAST_CACHE_DIR"] = str(work / "cache")
    weights = args.weights
    if weights is None:
        torch.manual_seed(0)
        weights = str(work / "random.safetensors")
        save_weights(weights, MambaST(MambaSTConfig()), source="bench_multi: random weights (speed only)")
    t = time.perf_counter()
    make_images(work / "in", args.images, args.size)
    make_images(work / "style_dir", 1, args.size, seed=10_000)
    style = work / "style_dir" / "img00000.jpg"
    print(f"{args.images} synthetic {args.size}² JPEGs in {time.perf_counter() - t:.1f}s; GPUs visible: {n_vis} "
          f"({torch.cuda.get_device_name(0)}); torch {torch.__version__}", flush=True)

    engine_kwargs = dict(weights=weights, precision=args.precision, seed=0)
    opts = RunOptions(size=args.size, max_side=0, batch_size=args.batch_size, fsync=False)
    rows: list[dict[str, Any]] = []
    if not args.no_in_process:
        rows.append(run_once("1 (in-process)", None, work / "in", style, work / "out_inproc", engine_kwargs, opts,
                             args.task_size))
        print(json.dumps(rows[-1]), flush=True)
    per = [int(k) for k in args.workers_per_gpu.split(",") if k.strip()]
    for c in counts:
        for k in per:
            label = str(c) if k == 1 else f"{c} x{k} workers"
            rows.append(run_once(label, [f"cuda:{i}" for i in range(c) for _ in range(k)], work / "in", style,
                                 work / f"out_{c}_{k}", engine_kwargs, opts, args.task_size))
            rows[-1]["gpus"], rows[-1]["workers_per_gpu"] = c, k
            print(json.dumps(rows[-1]), flush=True)

    base = next((r["steady_img_s"] for r in rows if r["label"] == "1"), None)
    print()
    print(f"{'GPUs':<16}{'ok':>6}{'failed':>8}{'wall img/s':>12}{'steady img/s':>14}{'scaling':>9}{'first out':>11}")
    for r in rows:
        scale = (r["steady_img_s"] / (base * r["gpus"])) if base else float("nan")
        r["scaling_vs_linear"] = round(scale, 3)
        print(f"{r['label']:<16}{r['ok']:>6}{r['failed']:>8}{r['wall_img_s']:>12.1f}{r['steady_img_s']:>14.1f}"
              f"{scale:>8.2f}x{(r['first_output_s'] or 0):>10.1f}s")
    info = {"device": torch.cuda.get_device_name(0), "gpus_visible": n_vis, "torch": torch.__version__,
            "images": args.images, "size": args.size, "precision": args.precision, "rows": rows}
    Path(args.json_out).write_text(json.dumps(info, indent=2))
    print(f"\nwrote {args.json_out}; scratch folder {work} (delete it when done)")


if __name__ == "__main__":
    main()
