"""The panel's look: its CSS, the names of its inputs and the small before / mask preview.

Pure functions (no widgets), so the panel's view code stays short and testable:

>>> from PIL import Image
>>> describe_source("photos/cat.jpg"), describe_source(Image.new("RGB", (4, 4)))
('cat.jpg', 'PIL image')
>>> preview = input_preview(Image.new("RGB", (600, 400)), Image.new("L", (600, 400), 255), height=60)
>>> preview.size
(186, 60)
"""

from __future__ import annotations

import html
import os
from typing import Any

from PIL import Image

from ..pictures import mask_overlay

__all__ = ["PANEL_CSS", "describe_source", "from_code_placeholder", "input_preview", "png_bytes",
           "stale_note_html"]

#: Styles scoped to ``.fluxnb-panel``: readable "from code" placeholders, a dimmed stale result.
PANEL_CSS = """<style>
.fluxnb-panel .fluxnb-from-code input::placeholder { color: #333; opacity: 1; font-style: italic; }
.fluxnb-panel .fluxnb-stale { opacity: 0.35; filter: grayscale(0.8); }
.fluxnb-panel .fluxnb-caption { font-size: 13px; color: #333; }
</style>"""

#: Gap in pixels between the two preview tiles.
_GAP = 6


def describe_source(source: Any) -> str:
    """A short name for an image or mask input: a file name, ``PIL image``, ``array``, ...

    >>> describe_source(b"...")
    'uploaded bytes'
    """
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text.startswith("data:"):
            return "data URI"
        return text.rstrip("/").rsplit("/", 1)[-1] or text
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "uploaded bytes"
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "")
        return os.path.basename(name) if name else "PIL image"
    if type(source).__name__ == "MaskPainter":
        return "painted mask"
    if hasattr(source, "shape"):
        return "array"
    return type(source).__name__


def from_code_placeholder(source: Any) -> str:
    """What an input field shows for an image or mask passed from code: its name and size.

    >>> import numpy as np
    >>> from_code_placeholder(np.zeros((64, 96), np.uint8))
    'from code: array 96x64'
    """
    size, shape = getattr(source, "size", None), getattr(source, "shape", None)
    dims = (f" {size[0]}x{size[1]}" if isinstance(size, tuple) else
            f" {shape[1]}x{shape[0]}" if shape is not None and len(shape) >= 2 else "")
    return f"from code: {describe_source(source)}{dims}"


def stale_note_html(why: str) -> str:
    """The note above a result that is not from the last run (``why``: what happened since)."""
    return ("<div class='fluxnb-stale-note' style='color:#8a5300'><b>stale:</b> this is the "
            f"result of an earlier run; {html.escape(why)}</div>")


def _thumb(image: Image.Image, height: int) -> Image.Image:
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.Resampling.BILINEAR)


def input_preview(image: Image.Image, mask: Image.Image, *, height: int = 96) -> Image.Image:
    """The input and the mask over it, side by side, ``height`` pixels high (no text in it).

    Both are shrunk first, so a 6000x4000 photo costs no more than a small one.
    """
    before = _thumb(image.convert("RGB"), height)
    over = mask_overlay(before, _thumb(mask.convert("L"), height))
    sheet = Image.new("RGB", (2 * before.width + _GAP, height), (255, 255, 255))
    sheet.paste(before, (0, 0))
    sheet.paste(over, (before.width + _GAP, 0))
    return sheet


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG (what an ``ipywidgets.Image`` shows)."""
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
