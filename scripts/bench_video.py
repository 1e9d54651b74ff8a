"""End-to-end video throughput on the GPU machine: 1080p H.264 in → stylised H.264 out, with the time split.

Random-weight full-size model (official sizes): speed only, the pictures mean nothing. Steps:
  1. make a synthetic 1920x1080 H.264 clip with an AAC track (libx264 ultrafast, moving pattern),
  2. baselines: decode only (PyAV, thread_type AUTO, to RGB), encode only per preset (libx264, crf 18),
     stylise only (Engine.stylize on batches, no I/O),
  3. the full `mambast video` job for each preset (and with/without --smooth), reporting frames/s and the
     decode / stylize / encode busy seconds of its three threads.

    python scripts/bench_video.py                          # defaults: 240 frames, presets veryfast faster medium
    python scripts/bench_video.py --frames 120 --presets medium --compile
Prints a table and writes --json-out (default bench_video.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_clip(path: str, w: int, h: int, n: int, fps: int = 30) -> None:
    import av
    import numpy as np

    out = av.open(path, "w")
    vs = out.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    vs.codec_context.options = {"preset": "ultrafast", "crf": "20"}
    a = out.add_stream("aac", rate=48000)
    a.layout = "stereo"
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.stack([128 + 100 * np.sin((xx + 4 * i) / 60.0), 128 + 100 * np.cos((yy - 2 * i) / 45.0),
                        128 + 60 * np.sin((xx + yy + 3 * i) / 90.0)], -1)
        img = (img + rng.normal(0, 4, (1, w, 1))).clip(0, 255).astype(np.uint8)
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = i
        f.time_base = Fraction(1, fps)
        for p in vs.encode(f):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    samples = int(48000 * n / fps)
    pos = 0
    while pos < samples:
        fr = av.AudioFrame.from_ndarray((np.random.default_rng(pos).standard_normal((2, 1024)) * 0.05).astype(np.float32),
                                        format="fltp", layout="stereo")
        fr.sample_rate, fr.pts = 48000, pos
        pos += 1024
        for p in a.encode(fr):
            out.mux(p)
    for p in a.encode():
        out.mux(p)
    out.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--presets", nargs="+", default=["veryfast", "faster", "medium"])
    ap.add_argument("--batch", type=int, default=0, help="frames per engine call (0 = auto, capped at 16)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", action="store_true", help="Engine(compile=True)")
    ap.add_argument("--smooth", type=int, nargs="+", default=[0, 4], help="--smooth values for the full job")
    ap.add_argument("--json-out", default="bench_video.json")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke test of this script only)")
    ap.add_argument("--codec-only", action="store_true", help="only the decode and encode rows (no model: any CPU box)")
    ap.add_argument("--job-only", action="store_true",
                    help="only the full-job rows (after a warm-up); with --workdir a clip made by an earlier run is reused")
    a = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from mambast_cli.engine import Engine
    from mambast_cli.model import MambaST, MambaSTConfig, tiny_config
    from mambast_cli.video import VideoOptions, run_videos
    from mambast_cli.video import io as vio

    work = a.workdir or tempfile.mkdtemp(prefix="mambast-bench-video-")
    os.makedirs(work, exist_ok=True)
    clip = os.path.join(work, f"clip_{a.width}x{a.height}_{a.frames}.mp4")
    style = os.path.join(work, "style.png")
    Image.fromarray((np.random.default_rng(1).random((512, 512, 3)) * 255).astype(np.uint8)).save(style)
    t0 = time.perf_counter()
    if not (a.workdir and os.path.exists(clip)):          # a clip of this size from an earlier run in --workdir: reused
        make_clip(clip + ".part.mp4", a.width, a.height, a.frames)
        os.replace(clip + ".part.mp4", clip)
    rows: list[dict] = []
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(f"clip: {a.frames} frames {a.width}x{a.height} made in {time.perf_counter() - t0:.1f}s; {env}", flush=True)

    # decode only
    info = vio.probe(clip)
    if not a.job_only:
        t0 = time.perf_counter()
        n = sum(1 for it in vio.read_frames(info, size=(info.width, info.height), copy=True)
                if isinstance(it, vio.DecodedFrame))
        dt = time.perf_counter() - t0
        rows.append({"what": "decode only (→ RGB)", "fps": round(n / dt, 1)})
        print(rows[-1], flush=True)
    frames = [it.image for it, _ in zip((x for x in vio.read_frames(info, size=(info.width, info.height), copy=False)
                                         if isinstance(x, vio.DecodedFrame)), range(32))]

    # encode only, per preset: from RGB frames (swscale converts), then from YUV 4:2:0 planes (what the video job
    # sends when it converts on the GPU)
    from mambast_cli.video.yuv import yuv420_planes

    step = int(1 / (float(info.rate) * float(info.time_base)))

    def encode_only(what: str, preset: str, pictures: list, write: str) -> None:
        out = os.path.join(work, f"enc_{preset}.mp4")
        w = vio.VideoWriter(out, info, width=info.width, height=info.height, preset=preset, copy=False)
        t0 = time.perf_counter()
        for i in range(a.frames):
            getattr(w, write)(pictures[i % len(pictures)], i * step)
        w.commit()
        dt = time.perf_counter() - t0
        rows.append({"what": what, "fps": round(a.frames / dt, 1), "mb": round(os.path.getsize(out) / 1e6, 2)})
        print(rows[-1], flush=True)

    probe_writer = vio.VideoWriter(os.path.join(work, "probe.mp4"), info, width=info.width, height=info.height,
                                   copy=False)
    lay = probe_writer.yuv420_layout()
    probe_writer.abort()
    planes = None if lay is None else [
        yuv420_planes(torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255, *lay)[0].numpy() for f in frames]
    for preset in [] if a.job_only else a.presets:
        encode_only(f"encode only libx264 {preset} crf18", preset, frames, "write")
        if planes is not None:
            encode_only(f"encode only libx264 {preset} crf18, from YUV planes", preset, planes, "write_yuv420")

    if a.codec_only:
        _print_table(rows, a, env)
        return 0
    # stylise only
    torch.manual_seed(0)
    eng = Engine(model=MambaST(tiny_config() if a.tiny else MambaSTConfig()), device=a.device, precision=a.precision, compile=a.compile,
                 disk_cache=False)
    from mambast_cli.video.run import load_style

    handle = load_style(eng, style, None)
    B = a.batch or min(16, eng.max_batch(info.height, info.width))
    x = torch.from_numpy(np.stack([frames[i % len(frames)] for i in range(B)])).permute(0, 3, 1, 2).float().div(255)
    for _ in range(2):
        eng.stylize(x, handle)   # warm-up (and compile)
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    t0 = time.perf_counter()
    reps = 0 if a.job_only else max(1, 64 // B)
    for _ in range(reps):
        eng.stylize(x, handle)
    dt = time.perf_counter() - t0
    if reps:
        rows.append({"what": f"stylize only (batch {B}, float CPU in/out)", "fps": round(reps * B / dt, 1)})
        print(rows[-1], flush=True)
    if torch.cuda.is_available() and reps:   # as the video job runs it: on the device (graphs for frames ≤ 1 MP)
        Bg = min(B, eng.max_graph_batch(info.height, info.width) or B)   # what the video job picks
        xd = x[:Bg].to(a.device)
        for _ in range(3):
            eng.stylize(xd, handle, on_device=True)           # eager, then capture
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            eng.stylize(xd, handle, on_device=True)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        graphs = {k: v for k, v in eng.stats.items() if k.startswith("graph_")}
        rows.append({"what": f"stylize only on the device (batch {Bg}, graphs {graphs})", "fps": round(reps * Bg / dt, 1)})
        print(rows[-1], flush=True)

    # the full job
    for preset in a.presets:
        for sm in a.smooth:
            out = os.path.join(work, f"out_{preset}_s{sm}.mp4")
            rep = run_videos([clip], style, eng, VideoOptions(output=out, overwrite=True, preset=preset, smooth=sm,
                                                              batch=a.batch))
            it = rep.items[0]
            assert it.status == "done", it.message
            rows.append({"what": f"full job libx264 {preset} smooth {sm}", "fps": round(it.frames / it.seconds, 1),
                         **it.timing})
            print(rows[-1], flush=True)
    _print_table(rows, a, env)
    return 0


def _print_table(rows: list[dict], a: argparse.Namespace, env: dict) -> None:
    print()
    cols = ["decode_s", "stylize_s", "gpu_wait_s", "encode_s", "wall_s",
            "read_wait_s", "buffer_wait_s", "stack_s", "writer_wait_s", "packet_wait_s",   # the main thread's
            "first_launch_s", "gpu_busy_s", "gpu_idle_s", "tail_s"]         # the GPU's timeline (CUDA)
    print("| what | fps | " + " | ".join(c.replace("_s", " s").replace("_", " ") for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in rows:
        print(f"| {r['what']} | {r['fps']} | " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    Path(a.json_out).write_text(json.dumps({"env": env, "args": vars(a), "rows": rows}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
