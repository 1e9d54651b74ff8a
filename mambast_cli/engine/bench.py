"""`mambast bench`: engine-only speed and memory, next to an in-repo equivalent of the official inference path.

Owns: `benchmark(...)` (runs everything, returns a JSON-serialisable dict; never prints) and `format_report(result)`
(the text tables). The `mambast bench` command is `mambast_cli.pipeline.bench.bench_command`, which adds the
end-to-end folder row.

Two paths run in the same process on the same synthetic images:

(a) "official-equivalent": what the official test loop does per pair, minus its training-only work (losses, VGG,
    identity reconstructions; spec §6.1/§7.2): batch 1, fp32, PyTorch's default backend flags (cuDNN TF32 on,
    cudnn.benchmark off), content *and* style uploaded and encoded again for every pair, no cache, output clamped and
    copied back. It is `MambaST.forward` of this repo. Its selective scan is whatever `mambast_kernels.cross_scan`
    picks (our Triton kernel on CUDA), or the PyTorch reference with materialised directions when
    `baseline_scan="ref"` (MAMBAST_SCAN=ref for that path only; very slow at 512² and above). The official code
    calls mamba_ssm's CUDA kernel instead: compare with shared/docs/perf-anchors.md for the real thing.
(b) "engine": `Engine` as the CLI uses it: bf16 autocast on CUDA (fp32 on CPU), contents batched (`max_batch`),
    one style encoded once and laid out once per grid, pinned host buffers, the CNN decoder channels-last with the
    fused pad kernel (`cnn_nhwc.NHWCDecoder`; the extras row times it against the NCHW module).

Rows: 256², 512², 1024² (N contents × 1 style); the 20-content × 40-style protocol at 512² (800 pairs, wall time
including model load from a weights file); one 3840×2160 image; a peak-memory-vs-pixels curve; and extras (bf16 vs
fp32 PSNR, channels-last on/off, style encode vs disk-cache load, optional torch.compile). Warm-up runs are separate
and reported; GPU timings use CUDA events after a synchronize plus wall clock; peak memory is
`torch.cuda.max_memory_allocated` above what was allocated before the step.

Random weights are fine for speed and memory (the maths is the same) but the pictures are meaningless; the report
says which weights were used. The end-to-end folder benchmark (decode → model → encode) is in pipeline/bench.py.
"""
from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator


if TYPE_CHECKING:
    import torch

    from ..model import MambaST

__all__ = ["benchmark", "format_report"]

_FULL = dict(sizes=(256, 512, 1024), n_contents=128, protocol=(20, 40), protocol_size=512, uhd=(2160, 3840),
             curve=(256, 512, 1024, 1536, 2048, 3072, 4096), baseline_curve_max=2048, extras_size=512)
_BASELINE_CONTENTS = 16
_TINY = dict(sizes=(32, 48), n_contents=3, protocol=(2, 3), protocol_size=32, uhd=(72, 128),
             curve=(32, 64), baseline_curve_max=64, extras_size=32)


# ----------------------------------------------------------------------------------------------------------------
# timing helpers


def _sync(dev: "torch.device") -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class _Clock:
    """Wall clock plus CUDA events (when on CUDA) around a region; `ms` is the CUDA-event time if available."""

    def __init__(self, dev: "torch.device") -> None:
        self.dev = dev
        self.wall_ms = 0.0
        self.gpu_ms: float | None = None

    def __enter__(self) -> "_Clock":
        import torch

        _sync(self.dev)
        if self.dev.type == "cuda":
            self._e0, self._e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._e0.record()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.dev.type == "cuda":
            self._e1.record()
        _sync(self.dev)
        self.wall_ms = (time.perf_counter() - self._t0) * 1e3
        if self.dev.type == "cuda":
            self.gpu_ms = self._e0.elapsed_time(self._e1)

    @property
    def ms(self) -> float:
        return self.gpu_ms if self.gpu_ms is not None else self.wall_ms


@contextmanager
def _peak(dev: "torch.device", out: dict[str, Any], key: str = "peak_mib") -> Iterator[None]:
    """Record peak device memory above the current allocation into out[key] (MiB; None on CPU)."""
    import torch

    if dev.type != "cuda":
        out[key] = None
        yield
        return
    _sync(dev)
    base = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    try:
        yield
    finally:
        _sync(dev)
        out[key] = round((torch.cuda.max_memory_allocated(dev) - base) / 2 ** 20, 1)


@contextmanager
def _official_flags(scan: str) -> Iterator[None]:
    """PyTorch's default backend flags (as the official scripts run) and, optionally, the reference scan."""
    import torch

    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             os.environ.get("MAMBAST_SCAN"))
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = False, True
    torch.backends.cuda.matmul.allow_tf32 = False
    if scan == "ref":
        os.environ["MAMBAST_SCAN"] = "ref"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[:3]
        if saved[3] is None:
            os.environ.pop("MAMBAST_SCAN", None)
        else:
            os.environ["MAMBAST_SCAN"] = saved[3]


def _is_oom(e: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(e, oom)


def _images(n: int, h: int, w: int, seed: int, pin: bool = False) -> "torch.Tensor":
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=g)
    return x.pin_memory() if pin else x


# ----------------------------------------------------------------------------------------------------------------
# the two paths


def _official_pair(model: "MambaST", content: "torch.Tensor", style: "torch.Tensor", dev: "torch.device") -> "torch.Tensor":
    """One pair the official way: upload both, encode both, decode, clamp, copy back (batch 1, fp32)."""
    import torch

    with torch.no_grad():
        c = content[None].to(dev)
        s = style[None].to(dev)
        out = model(c, s, seed=0)
        return out.clamp(0, 1).cpu()


def _official_loop(model: "MambaST", contents: "torch.Tensor", styles: "torch.Tensor", dev: "torch.device") -> None:
    for c in contents:
        for s in styles:
            _official_pair(model, c, s, dev)


def _engine_run(eng: Any, contents: "torch.Tensor", style_img: "torch.Tensor", batch: int, key: str | None = None) -> None:
    h = eng.encode_style(style_img, key=key)
    for i in range(0, contents.shape[0], batch):
        eng.stylize(contents[i:i + batch], h)


def _median_ms(fn: Callable[[], None], dev: "torch.device", repeats: int) -> tuple[float, float]:
    """Run fn `repeats` times; median CUDA-event ms (or wall ms on CPU), and median wall ms."""
    ms, wall = [], []
    for _ in range(repeats):
        with _Clock(dev) as c:
            fn()
        ms.append(c.ms)
        wall.append(c.wall_ms)
    return statistics.median(ms), statistics.median(wall)


# ----------------------------------------------------------------------------------------------------------------
# benchmark


def benchmark(
    *,
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    tiny: bool = False,
    sizes: tuple[int, ...] | None = None,
    n_contents: int | None = None,
    protocol: tuple[int, int] | None = None,
    protocol_size: int | None = None,
    uhd: tuple[int, int] | None = None,
    curve: tuple[int, ...] | None = None,
    repeats: int = 3,
    baseline: bool = True,
    baseline_scan: str = "auto",
    compile: bool = False,
    extras: bool = True,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the engine benchmark and return every number as a dict (see the module docstring for what runs).

    Args:
        weights: a mambast weights file; None → random weights (speed/memory only), seeded 0.
        device: "auto", "cpu", "cuda", "cuda:N".
        tiny: the tiny config and small sizes (CPU smoke runs, tests).
        sizes: square sides for the per-size rows (default 256, 512, 1024).
        n_contents: contents per size row (default on CUDA 128: two batches of 64 at 512², so the row measures
            throughput; with 16, as until session 8, the 256² row was launch-bound at half the rate; on a CPU 16).
            The baseline, one picture at a time, runs on the first 16 of them.
        protocol: (contents, styles) of the protocol row (default (20, 40)); (0, 0) skips it.
        protocol_size: its square side (default 512).
        uhd: (H, W) of the single-large-image row (default 2160×3840); (0, 0) skips it.
        curve: square sides for the memory-vs-pixels curve; () skips it.
        repeats: timed repetitions per row (median reported), after one warm-up.
        baseline: also run the official-equivalent path.
        baseline_scan: "auto" (cross_scan's choice: Triton on CUDA) or "ref" (PyTorch reference scan).
        compile: also time the engine with torch.compile.
        extras: bf16-vs-fp32 PSNR, channels-last on/off, style cache encode vs disk load.
        on_progress: called with a short line before each step (the CLI shows it).

    Returns:
        {"meta": ..., "rows": [...], "protocol": ..., "uhd": ..., "curve": [...], "extras": ...}.
    """
    import torch

    from ..model import MambaST, MambaSTConfig, tiny_config
    from ..model.weights import load_model, save_weights
    from .engine import Engine, psnr, resolve_device

    say = on_progress or (lambda _m: None)
    d = dict(_TINY if tiny else _FULL)
    sizes = tuple(sizes or d["sizes"])
    dev = resolve_device(device)
    # on a CPU a row of 128 full-size pictures would take half an hour: 16 there
    n_contents = int(n_contents or (d["n_contents"] if dev.type == "cuda" else min(d["n_contents"], 16)))
    protocol = tuple(protocol) if protocol is not None else d["protocol"]
    protocol_size = int(protocol_size or d["protocol_size"])
    uhd = tuple(uhd) if uhd is not None else d["uhd"]
    curve = tuple(curve) if curve is not None else d["curve"]
    workdir = Path(tempfile.mkdtemp(prefix="mambast-bench-"))

    if weights is None:
        torch.manual_seed(0)
        ref_model = MambaST(tiny_config() if tiny else MambaSTConfig()).eval()
        wpath = workdir / "random.safetensors"
        save_weights(wpath, ref_model, source="random init (benchmark)")
        weights_note = "random weights (seeded): speed and memory only, the pictures are meaningless"
    else:
        wpath = Path(weights)
        weights_note = f"weights file {wpath}"
    baseline_model = load_model(wpath, device=dev).requires_grad_(False) if baseline else None

    def engine(**kw: Any) -> Engine:
        kw.setdefault("disk_cache", False)
        kw.setdefault("cache_dir", workdir / "cache")
        return Engine(weights=wpath, device=str(dev), **kw)

    eng = engine()
    result: dict[str, Any] = {
        "meta": {**eng.info(), "weights_note": weights_note, "baseline_scan": baseline_scan,
                 "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "repeats": repeats, "tiny": tiny},
        "rows": [], "protocol": None, "uhd": None, "curve": [], "extras": {},
    }
    if baseline_model is not None:
        with _official_flags(baseline_scan):
            from mambast_kernels import backend_for
            result["meta"]["baseline_scan_backend"] = backend_for(torch.empty(0, device=dev))

    # -- per-size rows ---------------------------------------------------------------------------------------
    for S in sizes:
        say(f"{S}x{S}: {n_contents} contents x 1 style")
        row: dict[str, Any] = {"size": f"{S}x{S}", "n": n_contents}
        contents = _images(n_contents, S, S, seed=S, pin=dev.type == "cuda")
        styles = _images(repeats + 2, S, S, seed=S + 1)
        if baseline_model is not None:
            with _official_flags(baseline_scan):
                with _Clock(dev) as c:
                    _official_pair(baseline_model, contents[0], styles[0], dev)
                row["baseline_warmup_ms"] = round(c.wall_ms, 2)
                it = iter(range(1, 10 ** 6))
                few = contents[:_BASELINE_CONTENTS]          # batch 1 either way: per-picture time does not need all
                with _peak(dev, row, "baseline_peak_mib"):
                    ms, _ = _median_ms(lambda: _official_loop(baseline_model, few, styles[next(it) % len(styles)][None], dev),
                                       dev, repeats)
            row["baseline_ms_per_img"] = round(ms / len(few), 3)
        B = eng.max_batch(S, S)
        row["engine_batch"] = B
        with _Clock(dev) as c:
            _engine_run(eng, contents, styles[0], B)         # warm-up: the same shapes as the timed runs
        row["engine_warmup_ms"] = round(c.wall_ms, 2)
        it2 = iter(range(1, 10 ** 6))
        with _peak(dev, row, "engine_peak_mib"):
            ms, wall = _median_ms(lambda: _engine_run(eng, contents, styles[next(it2) % len(styles)], B), dev, repeats)
        row["engine_ms_per_img"] = round(ms / n_contents, 3)
        row["engine_img_per_s"] = round(1e3 * n_contents / wall, 1)
        _engine_run(eng, contents[:1], styles[0], 1)
        ms1, _ = _median_ms(lambda: _engine_run(eng, contents[:1], styles[0], 1), dev, repeats)
        row["engine_b1_ms"] = round(ms1, 3)
        if "baseline_ms_per_img" in row:
            row["speedup"] = round(row["baseline_ms_per_img"] / row["engine_ms_per_img"], 2)
        result["rows"].append(row)

    # -- protocol: 20 contents x 40 styles at 512², wall time including model load -------------------------
    nc, ns = protocol
    if nc and ns:
        say(f"protocol: {nc} contents x {ns} styles at {protocol_size}x{protocol_size}")
        P = protocol_size
        contents = _images(nc, P, P, seed=7, pin=dev.type == "cuda")
        styles = _images(ns, P, P, seed=8)
        prot: dict[str, Any] = {"contents": nc, "styles": ns, "pairs": nc * ns, "size": f"{P}x{P}"}
        if baseline_model is not None:
            with _official_flags(baseline_scan):
                with _Clock(dev) as c:
                    m = load_model(wpath, device=dev).requires_grad_(False)
                    _official_loop(m, contents, styles, dev)
                del m
            prot["baseline_wall_s"] = round(c.wall_ms / 1e3, 3)
        cache_root = workdir / "protocol-cache"
        runs = []
        # the content side once per content for all styles (Engine.stylize_many, what the pipeline does), and for
        # comparison one stylize call per style (the content side once per pair)
        for run, shared in (("first run (empty disk cache)", True), ("second run (warm disk cache)", True),
                            ("warm, one stylize call per style", False)):
            with _Clock(dev) as c:
                e = Engine(weights=wpath, device=str(dev), cache_dir=cache_root, disk_cache=True)
                B = e.max_batch(P, P)
                hs = [e.encode_style(styles[j], key=f"protocol-style-{j}") for j in range(ns)]
                for i in range(0, nc, B):
                    if shared:
                        for _ in e.stylize_many(contents[i:i + B], hs):
                            pass
                    else:
                        for h in hs:
                            e.stylize(contents[i:i + B], h)
            st = e.stats
            runs.append({"run": run, "wall_s": round(c.wall_ms / 1e3, 3), "load_s": round(e.load_seconds, 3),
                         "batch": B, "style_encodes": st["style_encodes"],
                         "style_cache_hits_disk": st["style_cache_hits_disk"]})
            del e
        prot["engine_runs"] = runs
        if "baseline_wall_s" in prot:
            prot["speedup_first_run"] = round(prot["baseline_wall_s"] / runs[0]["wall_s"], 2)
        result["protocol"] = prot

    # -- one large image ----------------------------------------------------------------------------------------
    if uhd and uhd[0] and uhd[1]:
        H, W = uhd
        say(f"single {W}x{H} image")
        x = _images(1, H, W, seed=9, pin=dev.type == "cuda")
        style = _images(1, 512 if not tiny else 32, 512 if not tiny else 32, seed=10)[0]
        u: dict[str, Any] = {"size": f"{W}x{H}"}
        if baseline_model is not None:
            try:
                with _official_flags(baseline_scan):
                    _official_pair(baseline_model, x[0], style, dev)
                    with _peak(dev, u, "baseline_peak_mib"):
                        u["baseline_ms"] = round(_median_ms(lambda: _official_pair(baseline_model, x[0], style, dev),
                                                            dev, max(1, repeats - 1))[0], 2)
            except RuntimeError as e:
                if not _is_oom(e):
                    raise
                u["baseline_ms"] = "OOM"
            _free(dev)
        h = eng.encode_style(style)
        tiled0 = eng.stats["tiled_renders"]
        eng.stylize(x, h)
        with _peak(dev, u, "engine_peak_mib"):
            u["engine_ms"] = round(_median_ms(lambda: eng.stylize(x, h), dev, max(1, repeats - 1))[0], 2)
        u["engine_tiled"] = eng.stats["tiled_renders"] > tiled0
        if isinstance(u.get("baseline_ms"), float):
            u["speedup"] = round(u["baseline_ms"] / u["engine_ms"], 2)
        result["uhd"] = u
        _free(dev)

    # -- memory vs pixels ----------------------------------------------------------------------------------------
    for S in curve:
        say(f"memory curve: {S}x{S}")
        pt: dict[str, Any] = {"size": f"{S}x{S}", "pixels": S * S}
        x = _images(1, S, S, seed=11)
        style = _images(1, min(S, 512), min(S, 512), seed=12)[0]
        try:
            h = eng.encode_style(style)
            eng.stylize(x, h)
            with _peak(dev, pt, "engine_peak_mib"):
                pt["engine_ms"] = round(_median_ms(lambda: eng.stylize(x, h), dev, 1)[0], 2)
        except RuntimeError as e:
            if not _is_oom(e):
                raise
            pt["engine_ms"] = "OOM"
        if pt.get("engine_peak_mib"):
            pt["engine_bytes_per_px"] = round(pt["engine_peak_mib"] * 2 ** 20 / (S * S))
        if baseline_model is not None and S <= d["baseline_curve_max"]:
            try:
                with _official_flags(baseline_scan):
                    with _peak(dev, pt, "baseline_peak_mib"):
                        _official_pair(baseline_model, x[0], style, dev)
            except RuntimeError as e:
                if not _is_oom(e):
                    raise
                pt["baseline_peak_mib"] = "OOM"
        result["curve"].append(pt)
        _free(dev)

    # -- extras -------------------------------------------------------------------------------------------------
    if extras:
        E = d["extras_size"]
        say("extras: precision, channels-last, style cache")
        x = _images(4, E, E, seed=13, pin=dev.type == "cuda")
        style = _images(1, E, E, seed=14)[0]
        ex: dict[str, Any] = {"size": f"{E}x{E}"}
        e32 = engine(precision="fp32")
        o32 = e32.stylize(x, e32.encode_style(style))
        del e32
        if dev.type == "cuda":
            ebf = engine(precision="bf16")
            ex["psnr_bf16_vs_fp32_db"] = round(psnr(o32, ebf.stylize(x, ebf.encode_style(style))), 2)
            del ebf
            cl: dict[str, float] = {}
            outs = []
            for flag in (False, True):
                e = engine(channels_last=flag)
                B = e.max_batch(E, E)
                xs = _images(B, E, E, seed=15, pin=True)
                h = e.encode_style(style)
                outs.append(e.stylize(xs[:4], h))
                cl[str(flag).lower()] = round(_median_ms(lambda: e.stylize(xs, h), dev, repeats)[0] / B, 3)
                del e
            ex["channels_last_ms_per_img"] = cl
            ex["psnr_channels_last_vs_nchw_db"] = round(psnr(outs[0], outs[1]), 2)
        # style encode vs disk-cache load (what the disk cache buys per style)
        root = workdir / "extras-cache"
        e1 = engine(cache_dir=root, disk_cache=True)
        with _Clock(dev) as c:
            e1.encode_style(style, key="extras-style")
        ex["style_encode_ms"] = round(c.wall_ms, 2)
        e2 = engine(cache_dir=root, disk_cache=True)
        with _Clock(dev) as c:
            e2.encode_style(style, key="extras-style")
        ex["style_disk_load_ms"] = round(c.wall_ms, 2)
        ex["style_disk_hit"] = e2.stats["style_cache_hits_disk"] == 1
        h = e2.encode_style(style, key="extras-style")
        grid = (math.ceil(E / 8) + 1, math.ceil(E / 8))
        with _Clock(dev) as c:
            e2._layout(h, grid)
        ex["style_layout_ms"] = round(c.wall_ms, 2)
        del e1, e2
        if compile:
            say("extras: torch.compile")
            ec = engine(compile=True)
            B = ec.max_batch(E, E)
            xs = _images(B, E, E, seed=16, pin=dev.type == "cuda")
            h = ec.encode_style(style)
            with _Clock(dev) as c:
                ec.stylize(xs, h)
            ex["compile_first_call_s"] = round(c.wall_ms / 1e3, 2)
            ex["compile_ms_per_img"] = round(_median_ms(lambda: ec.stylize(xs, h), dev, repeats)[0] / B, 3)
        result["extras"] = ex
    if dev.type == "cuda":
        result["meta"]["peak_mib_total"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 20, 1)
    return result


def _free(dev: "torch.device") -> None:
    import gc

    import torch

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# report


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3g}{unit}" if abs(v) < 100 else f"{v:,.0f}{unit}"
    return f"{v}{unit}"


def format_report(result: dict[str, Any]) -> str:
    """Plain-text tables of a `benchmark` result (what `mambast bench` prints without --json).

    Args:
        result: the dict `benchmark` returned.

    Returns:
        Multi-line text.
    """
    m = result["meta"]
    lines = [
        f"mambast {m['mambast']} bench · {m['device_name']} ({m['device']}) · torch {m['torch']} · triton {m['triton']}"
        f" · CUDA {m['cuda']} · {m['date']}",
        f"engine: {m['precision']}, scan {m['scan_backend']}, channels_last={m['channels_last']}, cuda_graphs={m.get('cuda_graphs')}, compile={m['compile']}"
        f" · baseline: fp32 batch 1, scan {m.get('baseline_scan_backend', '-')}",
        f"{m['weights_note']}",
        "",
        f"{'size':>10} {'baseline ms/img':>16} {'engine ms/img':>14} {'batch':>6} {'engine b1 ms':>13} {'img/s':>8}"
        f" {'speedup':>8} {'peak MiB base/eng':>18}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['size']:>10} {_fmt(r.get('baseline_ms_per_img')):>16} {_fmt(r['engine_ms_per_img']):>14}"
            f" {r['engine_batch']:>6} {_fmt(r['engine_b1_ms']):>13} {_fmt(r['engine_img_per_s']):>8}"
            f" {_fmt(r.get('speedup'), 'x'):>8} {_fmt(r.get('baseline_peak_mib')) + '/' + _fmt(r.get('engine_peak_mib')):>18}"
        )
    p = result.get("protocol")
    if p:
        lines += ["", f"protocol {p['contents']} contents x {p['styles']} styles = {p['pairs']} pairs at {p['size']}"
                      " (wall time incl. model load):",
                  f"  baseline (official-equivalent): {_fmt(p.get('baseline_wall_s'), ' s')}"]
        for r in p["engine_runs"]:
            lines.append(f"  engine, {r['run']}: {_fmt(r['wall_s'], ' s')} (load {_fmt(r['load_s'], ' s')}, batch"
                         f" {r['batch']}, style encodes {r['style_encodes']}, disk hits {r['style_cache_hits_disk']})")
        if "speedup_first_run" in p:
            lines.append(f"  speedup (first run): {p['speedup_first_run']}x")
    u = result.get("uhd")
    if u:
        lines += ["", f"single {u['size']} image: baseline {_fmt(u.get('baseline_ms'), ' ms')}"
                      f" (peak {_fmt(u.get('baseline_peak_mib'), ' MiB')}), engine {_fmt(u['engine_ms'], ' ms')}"
                      f" (peak {_fmt(u.get('engine_peak_mib'), ' MiB')}, tiled={u['engine_tiled']})"
                      + (f", speedup {u['speedup']}x" if "speedup" in u else "")]
    if result.get("curve"):
        lines += ["", f"{'memory curve':>12} {'engine ms':>10} {'engine peak MiB':>16} {'bytes/px':>9} {'baseline peak MiB':>18}"]
        for pt in result["curve"]:
            lines.append(f"{pt['size']:>12} {_fmt(pt.get('engine_ms')):>10} {_fmt(pt.get('engine_peak_mib')):>16}"
                         f" {_fmt(pt.get('engine_bytes_per_px')):>9} {_fmt(pt.get('baseline_peak_mib')):>18}")
    ex = result.get("extras") or {}
    if ex:
        lines += ["", f"extras at {ex['size']}:"]
        if "psnr_bf16_vs_fp32_db" in ex:
            on = "random weights, noise pictures" if m["weights_note"].startswith("random") else "noise pictures"
            lines.append(f"  bf16 vs fp32 output PSNR: {ex['psnr_bf16_vs_fp32_db']} dB ({on}; on real pictures with "
                         "the bundled model: scripts/check_precision.py)")
        if "channels_last_ms_per_img" in ex:
            cl = ex["channels_last_ms_per_img"]
            lines.append(f"  channels-last CNN decoder: off {cl['false']} ms/img, on {cl['true']} ms/img")
            if "psnr_channels_last_vs_nchw_db" in ex:
                lines.append(f"  channels-last vs NCHW output PSNR: {ex['psnr_channels_last_vs_nchw_db']} dB")
        lines.append(f"  style encode {ex['style_encode_ms']} ms · disk-cache load {ex['style_disk_load_ms']} ms"
                     f" (hit={ex['style_disk_hit']}) · per-grid layout {ex['style_layout_ms']} ms")
        if "compile_ms_per_img" in ex:
            lines.append(f"  torch.compile: {ex['compile_ms_per_img']} ms/img (first call {ex['compile_first_call_s']} s)")
    return "\n".join(lines)


if __name__ == "__main__":  # `python -m mambast_cli.engine.bench --json` (the device scripts use it): same as `mambast bench`
    import typer

    from mambast_cli.pipeline.bench import bench_command

    typer.run(bench_command)
