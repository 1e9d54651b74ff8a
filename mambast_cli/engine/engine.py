"""The inference engine: one loaded model on one device, a style cache, and batched stylisation.

Owns: device and precision choice, loading weights (never random ones), the style side (encode once per style,
lay out once per content token grid, memoised in memory and on disk), the per-batch forward (bf16 autocast on
CUDA with the scan state in fp32, the "one style, many contents" G-readout decoder, the channels-last CNN decoder
with fused pads (`cnn_nhwc`), CUDA graphs of the whole batch forward for pictures up to 1 MP (`graphs`), pinned
host buffers), several styles for one batch of contents with the content side computed once (`stylize_many`,
spec §7.3–7.4), strength (`alpha`) and colour preservation, exact tiling of the CNN decoder for huge images, and
out-of-memory recovery (smaller batches, then tiles).

Does not: read or write image files, print, pick exit codes, or batch a folder (the pipeline does). Inputs are
float (B, 3, H, W) in [0, 1] on the CPU (pinned or not); outputs are float32 (B, 3, H, W) in [0, 1] on the CPU,
clamped here. Not thread-safe: use one Engine from one thread.

Spec: §7.3–7.4 (what is cacheable per style, the split forward), §2.11 (CNN decoder, for the tiling halo).

Style cache, the two levels:
- the style *memory* (encoder_s output, 1 × Ls × C) is the expensive, content-independent part (three
  selective-scan blocks). It is computed once per (style bytes, resized style size, weights) and stored on disk;
- the per-grid *layout* (shuffled tokens and each decoder block's s', Δ, B; `model.prepare_style`) depends on the
  seed and the content token grid. It is cheap to recompute from the memory (a few linear layers) but large
  (about 240 MiB per style per 512² grid in fp32), so it is memoised in device memory only, LRU-bounded.
Because every layout is derived from the memory with the engine's seed, results do not depend on the order in
which sizes or styles are met, nor on whether the memory came from the disk.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..errors import DeviceError, InputError, UsageError, WeightsError
from ..model import MambaST, StyleState
from .cache import DiskCache, make_key
from .cnn_nhwc import NHWCDecoder
from .graphs import GraphCache
from .render import TiledCNN, cnn_geometry, preserve_color

__all__ = ["Engine", "StyleHandle", "DEFAULT_STYLE_SIZE", "resolve_device", "resolve_precision"]

DEFAULT_STYLE_SIZE = 512
"""Default style size: a style whose shorter side is above 512 px is downscaled to 512 (the official evaluation
size); smaller styles are kept as they are. Pass `style_size` to resize to an exact shorter side instead."""

MIN_SIDE = 1  # the model pads tiny images itself (at least 2 patches a side)
"""Smallest image side: the CNN decoder reflect-pads its first (token-resolution) layer, so a side must span at least
two 8-pixel tokens."""

_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

# Bytes of device memory per content pixel at batch 1 (whole forward, incl. the CNN decoder at full resolution).
# From perf-anchors (official code, fp32: 0.5 GiB at 512², 1.9 GiB at 1024²) plus a margin; `mambast bench`'s memory
# curve prints the measured value so these can be recalibrated.
_BYTES_PER_PIXEL = {torch.float32: 2400, torch.bfloat16: 1600}
# CNN decoder alone, per output pixel (three 64-channel maps live at full resolution, plus workspace).
_CNN_BYTES_PER_PIXEL = {torch.float32: 1024, torch.bfloat16: 512}
_CPU_RENDER_PIXELS = 4 * 1024 * 1024      # CPU: render at most ~4 MP per CNN call (bounded RAM)
_MIN_TILE_PIXELS = 256 * 256              # OOM recovery gives up below this tile size
#: CUDA graphs only for pictures up to this many pixels: above it a batch's kernels run long enough that launching
#: them costs nothing noticeable, and a captured graph would hold its activations (4K: 133 ms eager vs 217 ms with
#: the capture in the timed runs, 5.1 vs 13.0 GB peak; BENCHMARKS.md session 4)
GRAPH_MAX_PICTURE_PIXELS = 1024 * 1024
_INDEX_LIMIT = 2**31 - 1                  # elements: PyTorch kernels that use 32-bit index math refuse more
_MAX_MEMO_STYLES = 256                    # encoded styles remembered by key (≈8 MiB of device memory each at 512²)


def index_safe_pixels(cfg: Any) -> int:
    """Most output pixels one CNN-decoder call may produce so that no tensor in it reaches 2**31 elements.

    The decoder's widest map per output pixel: c channels at 1/f of the resolution hold c / f² values per output
    pixel (512/64, 256/16, 128/4, 64/1 for the official widths: the last stage's 64 channels win). Reflection padding
    adds a border (counted with a 10 % margin, which covers tiles down to ~40 px a side)."""
    c0, (c1, c2, c3) = cfg.d_model, cfg.cnn_widths
    per_px = max(c0 / 64, c1 / 16, c2 / 4, c3)
    return int(_INDEX_LIMIT / (per_px * 1.1))


def resolve_device(spec: str | torch.device) -> torch.device:
    """Turn "auto" | "cpu" | "cuda" | "cuda:N" into a torch.device that exists here.

    Args:
        spec: the device string (or a torch.device).

    Returns:
        The device ("auto" → the current CUDA device when available, else CPU).

    Raises:
        UsageError: not a device string.
        DeviceError: CUDA (or that CUDA index) is not available.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    s = str(spec).strip().lower()
    if s == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but CUDA is not available",
                              hint="use --device cpu, or install a CUDA build of PyTorch")
        idx = torch.cuda.current_device() if s == "cuda" else s.split(":", 1)[1]
        try:
            i = int(idx)
        except ValueError:
            raise UsageError(f"unknown device {spec!r}", hint="use auto, cpu, cuda or cuda:N") from None
        n = torch.cuda.device_count()
        if not 0 <= i < n:
            raise DeviceError(f"device {spec!r} requested but only {n} CUDA device(s) exist",
                              hint=f"use cuda:0 … cuda:{n - 1}")
        return torch.device("cuda", i)
    raise UsageError(f"unknown device {spec!r}", hint="use auto, cpu, cuda or cuda:N")


def resolve_precision(spec: str, device: torch.device) -> torch.dtype:
    """"auto" | "fp32" | "bf16" → the autocast dtype (float32 = no autocast).

    Args:
        spec: precision string.
        device: the resolved device ("auto" means bf16 on CUDA, fp32 on CPU).

    Returns:
        torch.bfloat16 or torch.float32.

    Raises:
        UsageError: unknown precision, or bf16 on a GPU without bf16 support.
    """
    s = str(spec).strip().lower()
    if s == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if s in ("fp32", "float32"):
        return torch.float32
    if s in ("bf16", "bfloat16"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UsageError("this GPU does not support bf16", hint="use --precision fp32")
        return torch.bfloat16
    raise UsageError(f"unknown precision {spec!r}", hint="use auto, fp32 or bf16")


def _model_id(model: MambaST) -> str:
    """sha256 over the model's state dict (same recipe as weights files), for cache keys of in-memory models."""
    from ..model.weights import tensors_sha256

    return tensors_sha256({k: v for k, v in model.state_dict().items()})


def _resize_shorter(img: torch.Tensor, shorter: int) -> torch.Tensor:
    """Resize (3, H, W) so its shorter side is `shorter` (bilinear, antialiased), clamped to [0, 1]."""
    H, W = img.shape[-2:]
    if min(H, W) == shorter:
        return img
    f = shorter / min(H, W)
    size = (max(1, round(H * f)), max(1, round(W * f)))
    out = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0.0, 1.0)


def _check_images(x: torch.Tensor, name: str, ndim: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != ndim or x.shape[-3] != 3 or not x.is_floating_point():
        want = "(3, H, W)" if ndim == 3 else "(B, 3, H, W)"
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor {want} in [0, 1], got {got}")
    if ndim == 4 and x.shape[0] < 1:
        raise ValueError(f"{name} is an empty batch: {tuple(x.shape)}")
    H, W = x.shape[-2:]
    if min(H, W) < MIN_SIDE:
        raise InputError(f"{name} is {W}x{H} pixels; mambast needs at least {MIN_SIDE} pixels on each side")


def _state_bytes(ss: StyleState) -> int:
    n = ss.memory.numel() * ss.memory.element_size()
    for b in ss.blocks:
        n += sum(t.numel() * t.element_size() for t in (b.u, b.delta, b.B))
    return n


@dataclass(eq=False)
class StyleHandle:
    """One encoded style: its memory (encoder_s output) and, per content token grid, its laid-out StyleState.

    Made by `Engine.encode_style`; pass it to `Engine.stylize`. Per-grid states are built lazily and memoised (the
    engine may drop them under memory pressure and rebuild them from the memory, with the same result).
    """

    key: str                         # what identifies the style's pixels (file sha256, or a hash of the pixels)
    cache_key: str                   # disk cache entry key (style key + weights id + resized size)
    size: tuple[int, int]            # the style's (H, W) after `style_size` resizing
    style_grid: tuple[int, int]      # its token grid
    memory: torch.Tensor             # (1, Ls, C) encoder_s output on the engine's device
    source: str                      # "encoded" | "disk" (where the memory came from)
    _grids: dict[tuple[int, int], StyleState] = field(default_factory=dict, repr=False)

    @property
    def grids(self) -> tuple[tuple[int, int], ...]:
        """Content grids whose layout is currently held in memory."""
        return tuple(self._grids)


class Engine:
    """A loaded Mamba-ST model on one device, with a style cache. Build once per run.

    Example:
        eng = Engine(weights="w.safetensors", device="auto")
        h = eng.encode_style(style_img, key=file_key("style.jpg"))
        out = eng.stylize(contents, h, alpha=0.8)        # (B, 3, H, W) float32 in [0, 1], CPU
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        disk_cache: bool = True,
        *,
        model: MambaST | None = None,
        compile: bool = False,
        channels_last: bool | None = None,
        render_pixels: int | None = None,
        style_memory_bytes: int | None = None,
        cache_max_bytes: int | None = None,
        deterministic: bool = True,
    ) -> None:
        """Load the model and set the device up.

        Args:
            weights: a mambast weights file; None → the bundled default (WeightsError if none is bundled).
            device: "auto" (CUDA if available), "cpu", "cuda" or "cuda:N".
            precision: "auto" (bf16 autocast on CUDA with fp32 scan state; fp32 on CPU), "fp32" or "bf16".
            seed: seeds the per-(style, decoder block) token shuffles; same seed → same output bytes (per device).
            cache_dir: disk cache root; default `cache.cache_dir()` (XDG / `MAMBAST_CACHE_DIR`).
            disk_cache: keep encoded styles on disk between runs.
            model: use this MambaST instead of loading weights (tests, benchmarks; moved to `device`).
            compile: torch.compile the CNN decoder (experimental; the first batch of each new size is slow while
                its graph compiles).
            channels_last: run the CNN decoder channels-last with the fused pad/ReLU/upsample kernel
                (`cnn_nhwc.NHWCDecoder`); None → on for CUDA with a bf16 compute dtype (env MAMBAST_NHWC_CNN=0 turns
                it off), off otherwise, so the fp32 path stays the plain reference module. PyTorch's own
                channels-last module was measured slower (BENCHMARKS.md, sessions 1 and 3); this is not that.
            render_pixels: most output pixels one CNN-decoder call may produce before it is split into batches
                and tiles; None → from free GPU memory (CUDA) or 4 MP (CPU).
            style_memory_bytes: device memory for memoised per-grid style layouts (LRU); None → 15% of the GPU,
                or 2 GiB on CPU.
            cache_max_bytes: disk cache cap; None → `MAMBAST_CACHE_MAX_BYTES` or 2 GiB.
            deterministic: cuDNN picks its algorithms by fixed heuristics (default), so a --seed gives the same
                bytes run after run; False turns on cudnn.benchmark (timing-based choice, may differ between runs).

        Raises:
            WeightsError: no weights given and none bundled, or the file is missing/corrupt/mismatched.
            DeviceError / UsageError: bad device or precision.
        """
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.seed = int(seed)
        t0 = time.perf_counter()
        if model is not None:
            self.weights_path: Path | None = None
            self.weights_meta: dict[str, str] = {"source": "in-memory model"}
            self.weights_id = _model_id(model)
            self.model = model
        else:
            from ..model import weights as W

            path = Path(weights) if weights is not None else W.default_weights_path()
            if path is None:
                raise WeightsError("no trained weights are bundled yet",
                                   hint="pass --weights FILE (see README: official checkpoints)")
            self.model = W.load_model(path, device="cpu", dtype=torch.float32)
            self.weights_path = path
            self.weights_meta = {k: v for k, v in W.read_metadata(path).items() if k != "config"}
            self.weights_id = self.weights_meta.get("sha256", "") or _model_id(self.model)
        self.model = self.model.to(self.device).eval().requires_grad_(False)
        self.load_seconds = time.perf_counter() - t0

        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = not deterministic
            torch.backends.cudnn.deterministic = deterministic
            torch.backends.cuda.matmul.allow_tf32 = False   # fp32 path stays a true fp32 reference
            torch.backends.cudnn.allow_tf32 = False
        self.geometry = cnn_geometry(self.model.cnn)
        self._render_pixels_fixed = render_pixels
        self.compiled = bool(compile)
        self._encode_content = self.model.encode_content
        self._decode_features = self.model.decode_features
        self._cnn_call: Callable[[torch.Tensor], torch.Tensor] = self.model.cnn
        if channels_last is None:
            channels_last = (self.device.type == "cuda" and self.dtype != torch.float32 and not self.compiled
                             and os.environ.get("MAMBAST_NHWC_CNN", "1") != "0")
        self.channels_last = bool(channels_last)
        if self.channels_last:
            try:
                self._cnn_call = NHWCDecoder(self.model.cnn, self.dtype)
            except ValueError:        # a decoder not of the spec's pattern: the plain module
                self.channels_last = False
        # CUDA graphs of the whole batch forward (bf16 path; the fp32 path stays the plain eager reference).
        self._graphs: GraphCache | None = None
        #: pictures up to this many output pixels run as CUDA graphs (when graphs are on); `scripts/check_graphs.py`
        #: raises it to check larger captures. Raising it for 1080p video gained nothing (BENCHMARKS.md, session 6).
        self.graph_max_pixels = GRAPH_MAX_PICTURE_PIXELS
        if (self.device.type == "cuda" and self.dtype != torch.float32 and not self.compiled
                and os.environ.get("MAMBAST_CUDA_GRAPHS", "1") != "0"):
            self._graphs = GraphCache(self._graph_forward)
        if self.compiled:
            # Only the CNN decoder (≈80% of the FLOPs at 512², plain convs, compiles cleanly). The Mamba part stays
            # eager: its scans are already Triton kernels, and tracing the reference scan unrolls its time loop.
            self._cnn_call = torch.compile(self.model.cnn, dynamic=None)

        if style_memory_bytes is None:
            style_memory_bytes = (int(0.15 * torch.cuda.get_device_properties(self.device).total_memory)
                                  if self.device.type == "cuda" else 2 * 1024 ** 3)
        self.style_memory_bytes = int(style_memory_bytes)
        self.disk: DiskCache | None = (DiskCache(Path(cache_dir) if cache_dir is not None else None, cache_max_bytes)
                                       if disk_cache else None)
        self._handles: OrderedDict[tuple[str, tuple[int, int]], StyleHandle] = OrderedDict()   # LRU memo
        self._layouts: OrderedDict[tuple[int, tuple[int, int]], tuple[StyleHandle, int]] = OrderedDict()
        self._layout_bytes = 0
        self._batch_caps: dict[tuple[int, int], int] = {}
        self._stats: dict[str, float] = dict(
            style_encodes=0, style_layouts=0, style_cache_hits_memory=0, style_cache_hits_disk=0,
            style_cache_writes=0, style_cache_corrupt=0, style_layout_evictions=0,
            pairs=0, batches=0, identity_passes=0, tiled_renders=0, oom_retries=0,
            seconds_style=0.0, seconds_stylize=0.0,
        )

    # ------------------------------------------------------------------------------------------------------------
    # introspection

    @property
    def stats(self) -> dict[str, float]:
        """Counters for the run: style_encodes (encoder_s runs), style_layouts (per-grid layouts built),
        style_cache_hits_memory / _disk, style_cache_writes / _corrupt, pairs (content×style images made),
        batches, identity_passes (alpha < 1), tiled_renders, oom_retries, seconds_style, seconds_stylize."""
        s = dict(self._stats)
        if self._graphs is not None:
            s.update({f"graph_{k}": v for k, v in self._graphs.stats.items()})
        if self.disk is not None:
            s["style_cache_corrupt"] = self.disk.stats["corrupt"]
            s["style_cache_writes"] = self.disk.stats["writes"]
            s["style_cache_evictions_disk"] = self.disk.stats["evictions"]
        return s

    def info(self) -> dict[str, Any]:
        """Versions, device, precision, weights and backends, for `mambast info` and benchmark headers.

        Returns:
            A JSON-serialisable dict.
        """
        from .. import __version__

        try:
            import triton
            triton_version: str | None = triton.__version__
        except Exception:  # noqa: BLE001 - triton is optional (CPU installs)
            triton_version = None
        try:
            from mambast_kernels import backend_for, fused_merge_enabled
            scan = backend_for(torch.empty(0, device=self.device))
            fused = scan == "triton" and fused_merge_enabled()
            if fused:
                from mambast_kernels.cross_scan_v2 import slot_dtype_for
                slots = "bf16" if slot_dtype_for(self.dtype) == torch.bfloat16 else "fp32"
            else:
                slots = "fp32"
        except Exception:  # noqa: BLE001 - reported, not fatal
            scan, fused, slots = "unknown", False, "fp32"
        dev = self.device
        return {
            "mambast": __version__,
            "torch": torch.__version__,
            "triton": triton_version,
            "cuda": torch.version.cuda,
            "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "precision": "bf16" if self.dtype == torch.bfloat16 else "fp32",
            "scan_backend": scan,
            "fused_merge": fused,
            # the scan switches a benchmark's numbers depend on (docs/cli.md): the decoder's stored style states and
            # the dtype of the direction slots
            "style_states": os.environ.get("MAMBAST_STYLE_STATES", "auto") if fused else "off",
            "scan_slots": slots,
            "compile": self.compiled,
            "channels_last": self.channels_last,
            "cuda_graphs": self._graphs is not None,
            "seed": self.seed,
            "weights_path": str(self.weights_path) if self.weights_path else None,
            "weights_id": self.weights_id,
            "weights_metadata": dict(self.weights_meta),
            "cache_dir": str(self.disk.root) if self.disk else None,
            "load_seconds": round(self.load_seconds, 4),
        }

    def max_batch(self, h: int, w: int) -> int:
        """How many h×w contents to send per `stylize` call.

        Args:
            h, w: content size in pixels.

        Returns:
            From free GPU memory and a per-pixel estimate (lowered after an out-of-memory retry), in [1, 64];
            on CPU a small constant (4 up to 256², 2 up to 1 MP, else 1).
        """
        px = max(1, int(h) * int(w))
        if self.device.type != "cuda":
            return 4 if px <= 256 * 256 else 2 if px <= 1024 * 1024 else 1
        free = self._free_bytes()
        n = int(0.8 * free // (px * _BYTES_PER_PIXEL[self.dtype]))
        n = max(1, min(64, n))
        cap = self._batch_caps.get((int(h), int(w)))
        return min(n, cap) if cap else n

    def max_graph_batch(self, h: int, w: int) -> int:
        """The largest batch of h×w contents that runs as one CUDA graph (0: such pictures never do: graphs off, CPU,
        or pictures above `graph_max_pixels`). A batch whose CNN decoder output must be split into several calls
        (above the render budget, e.g. 16 1080p frames) runs eagerly.

        Args:
            h, w: content size in pixels.

        Returns:
            A batch size, or 0.
        """
        if self._graphs is None:
            return 0
        px = self._output_pixels(h, w)
        if px > self.graph_max_pixels:
            return 0
        return max(1, self._render_budget() // px)

    def _output_pixels(self, h: int, w: int) -> int:
        """Pixels the CNN decoder renders for one h×w content (its padded token grid, upsampled)."""
        gh, gw = self.model.token_grid(h, w)
        return gh * gw * self.geometry.scale ** 2

    # ------------------------------------------------------------------------------------------------------------
    # style side

    @torch.inference_mode()
    def encode_style(self, image: torch.Tensor, *, key: str | None = None,
                     style_size: int | None = None) -> StyleHandle:
        """Encode a style image once (or fetch it from the memory/disk cache).

        Args:
            image: (3, H, W) float in [0, 1] (CPU or device).
            key: a stable id of the style's bytes (use `cache.file_key(path)`); None → a hash of the pixels.
            style_size: resize so the shorter side is exactly this; None → `DEFAULT_STYLE_SIZE` as a cap
                (downscale only).

        Returns:
            A StyleHandle for `stylize`.
        """
        _check_images(image, "style", 3)
        t0 = time.perf_counter()
        img = image.detach().to("cpu", torch.float32)
        H, W = img.shape[-2:]
        if style_size is not None:
            if int(style_size) < 1:
                raise UsageError(f"style size must be positive, got {style_size}")
            img = _resize_shorter(img, int(style_size))
        elif min(H, W) > DEFAULT_STYLE_SIZE:
            img = _resize_shorter(img, DEFAULT_STYLE_SIZE)
        size = (int(img.shape[-2]), int(img.shape[-1]))
        if key is None:
            key = "pixels:" + hashlib.sha256(img.contiguous().numpy().tobytes()).hexdigest()
        memo = (key, size)
        if memo in self._handles:
            self._stats["style_cache_hits_memory"] += 1
            self._handles.move_to_end(memo)
            return self._handles[memo]

        ck = make_key(style=key, weights=self.weights_id, size=list(size), memory_dtype="fp32")
        handle: StyleHandle | None = None
        if self.disk is not None:
            got = self.disk.get(ck)
            if got is not None:
                try:
                    st = StyleState.from_tensors(got[0])
                    memory = st.memory.to(self.device, torch.float32)
                    handle = StyleHandle(key, ck, size, tuple(st.style_grid), memory, "disk")
                    self._stats["style_cache_hits_disk"] += 1
                except (KeyError, IndexError, ValueError, RuntimeError):
                    handle = None  # checksum fine but not a StyleState we understand: recompute and overwrite
        if handle is None:
            x = img[None].to(self.device)
            with self._autocast(enabled=False):          # the style side is computed once: keep it fp32
                ss = self.model.encode_style(x, grid=None, seed=self.seed)
            self._stats["style_encodes"] += 1
            handle = StyleHandle(key, ck, size, tuple(ss.style_grid), ss.memory, "encoded")
            self._remember_layout(handle, ss)              # its own grid is laid out already; keep it
            if self.disk is not None:
                mem_only = StyleState(ss.memory, tuple(ss.style_grid), tuple(ss.style_grid), self.seed, [], [])
                self.disk.put(ck, mem_only.to_tensors(), {
                    "style_key": key, "style_size": f"{size[0]}x{size[1]}", "weights_id": self.weights_id,
                    "style_grid": f"{ss.style_grid[0]}x{ss.style_grid[1]}",
                })
        self._handles[memo] = handle
        while len(self._handles) > _MAX_MEMO_STYLES:      # handles stay valid; the memo just forgets them
            self._handles.popitem(last=False)
        self._stats["seconds_style"] += time.perf_counter() - t0
        return handle

    def _remember_layout(self, handle: StyleHandle, ss: StyleState) -> None:
        grid = tuple(ss.grid)
        nbytes = _state_bytes(ss) - ss.memory.numel() * ss.memory.element_size()   # memory is held by the handle
        handle._grids[grid] = ss
        self._layouts[(id(handle), grid)] = (handle, nbytes)
        self._layout_bytes += nbytes
        while self._layout_bytes > self.style_memory_bytes and len(self._layouts) > 1:
            (hid, g), (h, nb) = self._layouts.popitem(last=False)
            h._grids.pop(g, None)
            self._layout_bytes -= nb
            self._stats["style_layout_evictions"] += 1

    def _layout(self, handle: StyleHandle, grid: tuple[int, int]) -> StyleState:
        """The handle's StyleState for a content grid (memoised, LRU over all handles)."""
        ss = handle._grids.get(grid)
        if ss is not None:
            self._layouts.move_to_end((id(handle), grid))
            return ss
        t0 = time.perf_counter()
        with self._autocast(enabled=False):
            ss = self.model.prepare_style(handle.memory, handle.style_grid, grid, seed=self.seed)
        self._stats["style_layouts"] += 1
        self._remember_layout(handle, ss)
        self._stats["seconds_style"] += time.perf_counter() - t0
        return ss

    # ------------------------------------------------------------------------------------------------------------
    # content side

    def stylize(self, contents: torch.Tensor, style: StyleHandle, *, alpha: float = 1.0,
                preserve_color: bool = False, on_device: bool = False) -> torch.Tensor:
        """Stylise a batch of same-size contents with one style.

        Args:
            contents: (B, 3, H, W) float in [0, 1], CPU (pinned memory makes the upload asynchronous) or device.
            style: from `encode_style` of this engine.
            alpha: style strength in [0, 1]: decoder features are blended as alpha·stylised + (1−alpha)·identity,
                where identity = the decoder run with the content as its own style (what the model reconstructs
                the content from); then rendered once. alpha = 1 skips the identity pass, alpha = 0 the stylised one.
            preserve_color: keep the output's luminance and the content's chroma (YCbCr, BT.601).
            on_device: return the result on the engine's device instead of copying it to the CPU (for callers that
                post-process on the GPU and copy back fewer bytes, e.g. the video job's uint8 frames).

        Returns:
            (B, 3, H, W) float32 in [0, 1] on the CPU (pinned on CUDA), or on the engine's device with on_device.

        Raises:
            DeviceError: out of memory even at batch 1 with the smallest tiles.
        """
        _check_images(contents, "contents", 4)
        if not 0.0 <= float(alpha) <= 1.0:
            raise UsageError(f"alpha (style strength) must be in [0, 1], got {alpha}")
        t0 = time.perf_counter()
        B, _, H, W = contents.shape
        outs: list[torch.Tensor] = []
        step = B
        i = 0
        render_pixels = self._render_budget()
        while i < B:
            chunk = contents[i:i + step]
            failed = False
            try:
                outs.append(self._run(chunk, style, float(alpha), bool(preserve_color), render_pixels, on_device))
            except _OOM:
                failed = True
            if failed:
                self._stats["oom_retries"] += 1
                self._free_cached()
                if step > 1:
                    step = max(1, step // 2)
                    self._batch_caps[(H, W)] = step
                elif render_pixels > _MIN_TILE_PIXELS:
                    render_pixels = max(_MIN_TILE_PIXELS, render_pixels // 4)
                else:
                    raise DeviceError(f"out of GPU memory for a {W}x{H} image even at batch 1 with tiling",
                                      hint="use smaller images, close other GPU programs, or --device cpu")
                continue
            i += chunk.shape[0]
        self._stats["pairs"] += B
        self._stats["seconds_stylize"] += time.perf_counter() - t0
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def stylize_many(self, contents: torch.Tensor, styles: Sequence[StyleHandle], *, alpha: float = 1.0,
                     preserve_color: bool = False, on_device: bool = False) -> Iterator[torch.Tensor]:
        """Stylise one batch of same-size contents with several styles, computing the content side once.

        The content encoder (spec §7.3: patch embedding, three VSS blocks, and the identity features when
        alpha < 1) runs once for the batch; each style then runs only the ST-VSS decoder and the CNN decoder
        (§7.4). k styles cost one content encode plus k decodes instead of k whole forwards. Each result is the
        same bytes as ``stylize(contents, style)`` gives.

        Args:
            contents: (B, 3, H, W) float in [0, 1], as for `stylize`.
            styles: handles from `encode_style` of this engine.
            alpha, preserve_color, on_device: as for `stylize`.

        Yields:
            One result per style, in order, as `stylize` returns it. Results are made one at a time, so a caller
            that consumes each before asking for the next holds one in memory.

        Raises:
            DeviceError: as `stylize`. Out of GPU memory in the shared pass falls back to one `stylize` call per
                remaining style (which splits the batch and tiles as needed).
        """
        _check_images(contents, "contents", 4)
        if not 0.0 <= float(alpha) <= 1.0:
            raise UsageError(f"alpha (style strength) must be in [0, 1], got {alpha}")
        styles = list(styles)
        shared = None
        oom = False
        if len(styles) > 1:
            try:
                shared = self._encode_shared(contents, float(alpha))
            except _OOM:
                oom = True
        done = 0
        while shared is not None and done < len(styles):
            t0 = time.perf_counter()
            try:
                out = self._decode_shared(shared, styles[done], float(alpha), bool(preserve_color), on_device)
            except _OOM:
                oom = True
                break
            self._stats["pairs"] += contents.shape[0]
            self._stats["seconds_stylize"] += time.perf_counter() - t0
            done += 1
            yield out
            del out
        del shared
        if oom:                      # out of the except block, so the failed step's tensors are gone too
            self._stats["oom_retries"] += 1
            self._free_cached()
        for style in styles[done:]:
            yield self.stylize(contents, style, alpha=alpha, preserve_color=preserve_color, on_device=on_device)

    @torch.inference_mode()
    def _encode_shared(self, contents: torch.Tensor, alpha: float) -> tuple[torch.Tensor, Any, torch.Tensor | None, int]:
        """The style-independent part of `_forward` for a batch: (pixels on the device, content state, identity
        features or None, render budget)."""
        t0 = time.perf_counter()
        x = contents.to(self.device, non_blocking=contents.is_pinned()).float()
        with self._autocast():
            cs = self._encode_content(x)
            fid = None
            if alpha < 1.0:
                ident = self.model.encode_style(x, grid=cs.grid, seed=self.seed)   # S = B: content b → itself
                fid = self._decode_features(cs, ident)
                del ident
                self._stats["identity_passes"] += 1
        self._stats["seconds_stylize"] += time.perf_counter() - t0
        return x, cs, fid, self._render_budget()

    @torch.inference_mode()
    def _decode_shared(self, shared: tuple[torch.Tensor, Any, torch.Tensor | None, int], style: StyleHandle,
                       alpha: float, keep_color: bool, on_device: bool) -> torch.Tensor:
        """One style's decode + render from `_encode_shared`'s result, finished like `_run`."""
        x, cs, fid, render_pixels = shared
        with self._autocast():
            feats = fid
            if alpha > 0.0:
                ss = self._layout(style, tuple(cs.grid))
                f = self._decode_features(cs, ss)
                feats = f if fid is None else torch.lerp(fid, f, alpha)
            assert feats is not None
            img = self._render_features(feats, cs, render_pixels)
        return self._finish(img, x, keep_color, on_device)

    @torch.inference_mode()
    def _run(self, contents: torch.Tensor, style: StyleHandle, alpha: float, keep_color: bool,
             render_pixels: int, on_device: bool = False) -> torch.Tensor:
        """One batch through the model; returns float32 CPU (pinned when on CUDA), or on the device with on_device."""
        dev = self.device
        x = contents.to(dev, non_blocking=contents.is_pinned()).float()
        img = self._replay(x, style, render_pixels) if alpha == 1.0 else None
        if img is None:
            img = self._forward(x, style, alpha, render_pixels)
        return self._finish(img, x, keep_color, on_device)

    def _finish(self, img: torch.Tensor, x: torch.Tensor, keep_color: bool, on_device: bool) -> torch.Tensor:
        """Model output → the returned picture: float32, colour kept if asked, clamped, on the CPU unless on_device."""
        img = img.float()
        if keep_color:
            img = preserve_color(img, x)
        img = img.clamp_(0.0, 1.0)
        self._stats["batches"] += 1
        if self.device.type == "cuda" and not on_device:
            host = torch.empty(img.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(img, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()
            return host
        return img.contiguous()

    def _replay(self, x: torch.Tensor, style: StyleHandle, render_pixels: int) -> torch.Tensor | None:
        """The batch by CUDA-graph replay (`graphs.GraphCache`), or None to run it eagerly (graphs off, first batch
        of a shape, a render that must be split into tiles, or a shape that cannot be captured)."""
        if self._graphs is None:
            return None
        B, _, H, W = x.shape
        px = self._output_pixels(H, W)
        if px > self.graph_max_pixels or B * px > render_pixels:
            return None
        return self._graphs(x, self._layout(style, self.model.token_grid(H, W)))

    def _graph_forward(self, x: torch.Tensor, ss: StyleState) -> torch.Tensor:
        """What a graph captures: encode the contents, decode with the laid-out style, render (no tiling)."""
        with self._autocast():
            cs = self._encode_content(x)
            return self._render_features(self._decode_features(cs, ss), cs, 1 << 62)

    def _forward(self, x: torch.Tensor, style: StyleHandle, alpha: float, render_pixels: int) -> torch.Tensor:
        """The eager batch forward: (B, 3, H, W) on the device, in the compute dtype, unclamped."""
        with self._autocast():
            cs = self._encode_content(x)
            feats = None
            if alpha > 0.0:
                ss = self._layout(style, tuple(cs.grid))
                feats = self._decode_features(cs, ss)                    # (B, C, h, w), S=1: G-readout decoder
            if alpha < 1.0:
                ident = self.model.encode_style(x, grid=cs.grid, seed=self.seed)   # S = B: content b → itself
                fid = self._decode_features(cs, ident)
                del ident
                self._stats["identity_passes"] += 1
                feats = fid if feats is None else torch.lerp(fid, feats, alpha)
            assert feats is not None
            return self._render_features(feats, cs, render_pixels)

    def _render_features(self, feats: torch.Tensor, cs: Any, render_pixels: int) -> torch.Tensor:
        """Decoder features → picture: cast to the compute dtype, then the CNN decoder (`_render`)."""
        if self.dtype != torch.float32:
            # The first convolution would cast to bf16 anyway; casting before its reflection padding gives the
            # same values (padding only moves them) with half the bytes moved and stored.
            feats = feats.to(self.dtype)
        return self._render(feats, cs, render_pixels)

    def _render(self, feats: torch.Tensor, cs: Any, render_pixels: int) -> torch.Tensor:
        """`model.render` (CNN decoder + crop), split into batches/tiles above `render_pixels` output pixels."""
        B, _, h, w = feats.shape
        s = self.geometry.scale
        if B * h * w * s * s <= render_pixels and self._cnn_call is self.model.cnn:
            return self.model.render(feats, cs)
        tiled = TiledCNN(self.model.cnn, render_pixels, self.geometry, call=self._cnn_call)
        with _swapped(self.model, "cnn", tiled):
            out = self.model.render(feats, cs)
        self._stats["tiled_renders"] += tiled.tiled_calls
        return out

    # ------------------------------------------------------------------------------------------------------------
    # helpers

    def _autocast(self, enabled: bool = True) -> Any:
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)

    def _render_budget(self) -> int:
        """Output pixels one CNN-decoder call may produce: the fixed `render_pixels`, or what half the free GPU memory
        holds (CPU: 4 MP), never more than `index_safe_pixels` (PyTorch's reflection-pad and upsampling kernels refuse
        tensors of 2**31 elements or more: a batch of 17 1080p frames failed on an H100 before this cap)."""
        if self._render_pixels_fixed is not None:
            budget = int(self._render_pixels_fixed)
        elif self.device.type != "cuda":
            budget = _CPU_RENDER_PIXELS
        else:
            budget = max(_MIN_TILE_PIXELS, int(0.5 * self._free_bytes() // _CNN_BYTES_PER_PIXEL[self.dtype]))
        return min(budget, index_safe_pixels(self.model.cfg))

    def _free_bytes(self) -> int:
        free, _ = torch.cuda.mem_get_info(self.device)
        reusable = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return int(free + max(0, reusable))

    def _free_cached(self) -> None:
        if self._graphs is not None:
            self._graphs.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


@contextmanager
def _swapped(module: torch.nn.Module, name: str, replacement: torch.nn.Module) -> Iterator[None]:
    """Temporarily replace a submodule (used to give `MambaST.render` a tiled CNN decoder)."""
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB between two images in [0, 1] (inf when equal).

    Args:
        a, b: same-shape tensors.

    Returns:
        PSNR in dB.
    """
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
