"""Contact sheet: every content × every style rendered into one picture (style across, content down).

Owns the sheet's sequence of engine calls; drawing is mambast_cli.io.sheet. Never prints; events go through
``on_event`` like the stylize pipeline. Sheets are small, so this runs one picture at a time with no threads.
"""
from __future__ import annotations

import hashlib
import os
import time
from typing import Any, Sequence

from PIL import Image

from mambast_cli.errors import MambastError
from mambast_cli.io import decode_image, image_to_tensor, load_image, resize_image, target_size, tensor_to_image
from mambast_cli.io.sheet import compose_sheet
from mambast_cli.pipeline.run import EventCallback, Report, RunOptions, source_bytes, _out_of_memory_types, engine_counters
from mambast_cli.pipeline.plan import Event, Source


def build_sheet(
    contents: Sequence[str],
    styles: Sequence[str],
    engine: Any,
    opts: RunOptions | None = None,
    *,
    cell: int = 256,
    on_event: EventCallback | None = None,
) -> tuple[Image.Image, Report]:
    """Stylize every content with every style and lay the results out as a contact sheet.

    Args:
        contents: content image files (rows).
        styles: style image files (columns).
        engine: the engine.
        opts: processing options (size, alpha, ...).
        cell: side of each square in the sheet.
        on_event: per-item events (``ok``/``error``).

    Returns:
        (sheet image, report). Failed cells are drawn grey and counted in the report.
    """
    opts = opts or RunOptions()
    t0 = time.perf_counter()
    report = Report(planned=len(contents) * len(styles))
    oom = _out_of_memory_types()

    def emit(ev: Event) -> None:
        report.count(ev)
        if on_event:
            on_event(ev)

    style_imgs: list[Image.Image | None] = []
    handles: list[Any] = []
    style_err: list[MambastError | None] = []
    for s in styles:
        try:
            data = source_bytes(Source(s, s, (), ""))
            img = decode_image(data, name=s, max_pixels=opts.max_pixels)
            img = resize_image(img, target_size(*img.size, max_side=opts.max_side))
            handles.append(engine.encode_style(image_to_tensor(img), key=hashlib.sha256(data).hexdigest(),
                                               style_size=opts.style_size))
            style_imgs.append(img)
            style_err.append(None)
        except MambastError as e:
            style_imgs.append(None)
            handles.append(None)
            style_err.append(e)

    content_imgs: list[Image.Image | None] = []
    cells: list[list[Image.Image | None]] = []
    for c in contents:
        row: list[Image.Image | None] = []
        try:
            img = load_image(source_bytes(Source(c, c, (), "")), name=c, size=opts.size, max_side=opts.max_side,
                             max_pixels=opts.max_pixels)
            content_imgs.append(img)
            x = image_to_tensor(img).unsqueeze(0)
        except MambastError as e:
            content_imgs.append(None)
            for s in styles:
                emit(Event("error", input=c, style=s, error=type(e).__name__, message=str(e), hint=e.hint))
            cells.append([None] * len(styles))
            continue
        shared = _all_styles(engine, x, [h for h, e in zip(handles, style_err) if e is None], opts, oom)
        for s, h, serr in zip(styles, handles, style_err):
            t1 = time.perf_counter()
            if serr is not None:
                emit(Event("error", input=c, style=s, error=type(serr).__name__, message=f"style failed: {serr}"))
                row.append(None)
                continue
            if shared:
                out, dt = shared.pop(0)
                row.append(tensor_to_image(out[0]))
                emit(Event("ok", input=c, style=s, seconds=dt))
                continue
            try:
                out = engine.stylize(x, h, alpha=opts.alpha, preserve_color=opts.preserve_color)
                row.append(tensor_to_image(out[0]))
                emit(Event("ok", input=c, style=s, seconds=time.perf_counter() - t1))
            except oom as e:
                row.append(None)
                emit(Event("error", input=c, style=s, error="DeviceError", message=f"out of memory: {e}",
                           hint="lower --size"))
            except MambastError as e:
                row.append(None)
                emit(Event("error", input=c, style=s, error=type(e).__name__, message=str(e), hint=e.hint))
        cells.append(row)

    sheet = compose_sheet(style_imgs, content_imgs, cells, [os.path.basename(s) for s in styles],
                          [os.path.basename(c) for c in contents], cell=cell)
    report.elapsed_s = time.perf_counter() - t0
    report.style_cache_hits, report.style_encodes = engine_counters(engine)
    return sheet, report


def _all_styles(engine: Any, x: Any, handles: list[Any], opts: Any, oom: Any) -> list[tuple[Any, float]]:
    """One content with every usable style, its content side computed once (`Engine.stylize_many`): a list of
    (result, seconds) in style order. Empty when the engine has no such method or fewer than two styles; shorter
    when it failed part way (the rest then run one `stylize` call each, which reports its own error)."""
    many = getattr(engine, "stylize_many", None)
    done: list[tuple[Any, float]] = []
    if many is None or len(handles) < 2:
        return done
    t1 = time.perf_counter()
    try:
        for out in many(x, handles, alpha=opts.alpha, preserve_color=opts.preserve_color):
            done.append((out, time.perf_counter() - t1))
            t1 = time.perf_counter()
    except (oom, MambastError):
        pass
    return done

