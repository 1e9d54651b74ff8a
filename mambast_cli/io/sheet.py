"""Contact sheet layout: style pictures across the top, contents down the left, results in the grid, with labels.

Owns only drawing with Pillow. Must not decode files, print or know about the model.
"""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

_BG = (255, 255, 255)
_FAILED = (200, 200, 200)
_TEXT = (20, 20, 20)
_LABEL_H = 22
_PAD = 6


def _fit(img: Image.Image, cell: int) -> Image.Image:
    t = img.copy()
    t.thumbnail((cell, cell), Image.Resampling.LANCZOS)
    return t


def _label(text: str, width: int) -> str:
    return text if len(text) * 7 <= width else text[: max(1, width // 7 - 1)] + "…"


def compose_sheet(
    style_images: list[Image.Image | None],
    content_images: list[Image.Image | None],
    cells: list[list[Image.Image | None]],
    style_labels: list[str],
    content_labels: list[str],
    *,
    cell: int = 256,
) -> Image.Image:
    """Draw a contact sheet.

    Args:
        style_images: one per column (None: unreadable style, drawn grey).
        content_images: one per row (None: unreadable content, drawn grey).
        cells: ``cells[row][col]`` the result for content ``row`` × style ``col`` (None: failed, drawn grey).
        style_labels: column captions.
        content_labels: row captions.
        cell: the side of the square each picture is fitted into.

    Returns:
        The sheet, RGB.
    """
    cols, rows = len(style_images), len(content_images)
    step = cell + _PAD
    width = _PAD + (cols + 1) * step
    height = _PAD + (rows + 1) * (step + _LABEL_H)
    sheet = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()

    def put(img: Image.Image | None, x: int, y: int, caption: str | None) -> None:
        if img is None:
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=_FAILED)
            draw.text((x + 8, y + cell // 2 - 6), "failed", fill=_TEXT, font=font)
        else:
            t = _fit(img, cell)
            sheet.paste(t, (x + (cell - t.width) // 2, y + (cell - t.height) // 2))
        if caption:
            draw.text((x + 2, y + cell + 4), _label(caption, cell), fill=_TEXT, font=font)

    for c in range(cols):
        put(style_images[c], _PAD + (c + 1) * step, _PAD, style_labels[c])
    for r in range(rows):
        y = _PAD + (r + 1) * (step + _LABEL_H)
        put(content_images[r], _PAD, y, content_labels[r])
        for c in range(cols):
            put(cells[r][c], _PAD + (c + 1) * step, y, None)
    return sheet
