"""Pictures of a job, pure PIL + static HTML (no matplotlib, no client): the before / mask / after
strip that ``fluxnb run`` and ``fluxnb demo`` write, the mask overlay, thumbnails, the rows of a
results grid and their HTML, and the parameter titles.

A kernel module: the client's result (its ``_repr_html_``), the notebook surface
(:mod:`fluxnb.display`, the widgets, the sweep sheets) and the CLI all draw through it, and it
imports nothing above :mod:`fluxnb.images` and :mod:`fluxnb.schema`.

>>> img = Image.new("RGB", (64, 48), "gray"); m = Image.new("L", (64, 48), 0)
>>> before_mask_after(img, m, [img]).size[0] > 3 * 64
True
>>> html = grid_html([grid_row(img, m, [img], param_title({"steps": 8}))])
>>> html.count("<img"), "steps=8" in html
(3, True)
"""

from __future__ import annotations

import html as _html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .datauri import encode_data_uri
from .images import load_image, load_mask
from .schema import ALIASES, short_name

__all__ = ["THUMBNAIL_SIDE", "GridRow", "before_mask_after", "grid_html", "grid_row", "mask_overlay",
           "param_title", "preview_data_uri", "thumbnail"]

#: Default longest side of every thumbnail in a grid.
THUMBNAIL_SIDE = 384

_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
_OVERLAY = (255, 0, 72)

# the fields a title shows, in title order (each under its schema short name: ``steps=28``)
_TITLE_FIELDS = ("num_inference_steps", "guidance_scale", "strength", "num_images", "seed")


def thumbnail(img: Image.Image, max_side: int) -> Image.Image:
    """A copy of ``img`` no larger than ``max_side`` on its longer side (smaller ones unchanged).

    >>> thumbnail(Image.new("RGB", (800, 400)), 200).size
    (200, 100)
    """
    out = img.copy()
    if max(out.size) > max_side:
        out.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return out


def preview_data_uri(img: Image.Image) -> str:
    """A compact data URI to show ``img`` in HTML: JPEG (quality 85) for RGB and grey images,
    PNG for anything with transparency or a palette.

    >>> preview_data_uri(Image.new("RGB", (4, 4)))[:23]
    'data:image/jpeg;base64,'
    """
    buf = io.BytesIO()
    if img.mode in ("RGB", "L"):
        img.save(buf, format="JPEG", quality=85)
        return encode_data_uri(buf.getvalue(), "image/jpeg")
    img.save(buf, format="PNG")
    return encode_data_uri(buf.getvalue(), "image/png")


def mask_overlay(
    image: Image.Image, mask: Image.Image, *, color: tuple[int, int, int] = _OVERLAY, alpha: float = 0.5
) -> Image.Image:
    """The image with the mask's repaint area (white, >= 128) tinted in ``color`` and outlined.

    >>> mask_overlay(Image.new("RGB", (8, 8)), Image.new("L", (8, 8), 255)).getpixel((4, 4))[0] > 0
    True
    """
    base = image.convert("RGB")
    hole = np.asarray(mask.convert("L").resize(base.size, Image.Resampling.NEAREST)) >= 128
    arr = np.asarray(base).astype(np.float32)
    tint = np.array(color, np.float32)
    arr[hole] = arr[hole] * (1 - alpha) + tint * alpha
    # outline: hole pixels with a non-hole 4-neighbour
    edge = hole.copy()
    edge[1:-1, 1:-1] &= ~(hole[:-2, 1:-1] & hole[2:, 1:-1] & hole[1:-1, :-2] & hole[1:-1, 2:])
    arr[edge] = tint
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def _fit(image: Image.Image, height: int) -> Image.Image:
    scale = height / image.height
    size = (max(1, round(image.width * scale)), height)
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def before_mask_after(
    image: Image.Image,
    mask: Image.Image,
    outputs: Sequence[Image.Image],
    *,
    titles: Sequence[str] | None = None,
    caption: str = "",
    height: int = 384,
    gap: int = 12,
) -> Image.Image:
    """One picture: the input, the mask over the input, then every output, each titled.

    ``height`` is the height of every tile (aspect kept); ``caption`` is a line under the strip,
    e.g. the parameters of the run. Returns an RGB PIL image; save it with ``.save("x.png")``.
    """
    tiles = [_fit(image, height), _fit(mask_overlay(image, mask), height)]
    tiles += [_fit(out, height) for out in outputs]
    names = ["before", "mask"] + _after_names(len(outputs))
    if titles is not None:
        if len(titles) != len(tiles):
            raise ValueError(f"titles has {len(titles)} entries; expected {len(tiles)} "
                             f"(before, mask and {len(outputs)} outputs)")
        names = list(titles)
    font_size = max(12, height // 18)
    font, small = _font(font_size), _font(max(10, font_size * 3 // 4))
    title_h = font_size + gap
    caption_h = (font_size + gap) if caption else 0
    width = sum(t.width for t in tiles) + gap * (len(tiles) + 1)
    sheet = Image.new("RGB", (width, height + title_h + caption_h + 2 * gap), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    x = gap
    for tile, name in zip(tiles, names, strict=True):  # names has one entry per tile
        draw.text((x + tile.width / 2, gap + font_size / 2), name, fill=_TEXT, font=font, anchor="mm")
        sheet.paste(tile, (x, gap + title_h))
        x += tile.width + gap
    if caption:
        draw.text((gap, gap + title_h + height + gap // 2), caption, fill=_TEXT, font=small)
    return sheet


def _after_names(n: int) -> list[str]:
    return [f"after {i + 1}" if n > 1 else "after" for i in range(n)]


def param_title(params: Mapping[str, Any] | None = None, *, seed: Any = None) -> str:
    """A short title from job parameters: ``steps=28 · guidance=3.5 · strength=0.85 · seed=42``.

    Schema names and short names both work; LoRAs are listed by file name and scale; ``seed``
    (e.g. the seed a result reports) fills in a missing one.

    >>> param_title({"num_inference_steps": 28, "strength": 0.85}, seed=42)
    'steps=28 · strength=0.85 · seed=42'
    """
    params = dict(params or {})
    if seed is not None and params.get("seed") is None:
        params["seed"] = seed
    full = {ALIASES.get(k, k): v for k, v in params.items()}
    parts = []
    for field_name in _TITLE_FIELDS:
        value, name = full.get(field_name), short_name(field_name)
        if value is None or (field_name == "num_images" and value == 1):
            continue
        parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
    for lora in full.get("loras") or ():
        if isinstance(lora, Mapping) and lora.get("path"):
            name = str(lora["path"]).rstrip("/").rsplit("/", 1)[-1]
            parts.append(f"{name}×{lora.get('scale', 1.0):g}")
    return " · ".join(parts)


@dataclass
class GridRow:
    """One row of a results grid: the loaded inputs, the outputs, a title and the named
    thumbnails (``before``, ``mask``, ``after 1``, ...) drawn from them by :func:`grid_row`."""

    image: Image.Image | None
    mask: Image.Image | None
    outputs: list[Image.Image]
    title: str
    tiles: list[tuple[str, Image.Image]] = field(default_factory=list)


def grid_row(image: Any, mask: Any, outputs: Sequence[Any], title: str = "", *,
             max_side: int = THUMBNAIL_SIDE) -> GridRow:
    """A :class:`GridRow` with its thumbnails: the input, the mask over it (or the mask alone
    without an input), then each output; any image input works (loaded with :mod:`fluxnb.images`).

    >>> [name for name, _ in grid_row(None, Image.new("L", (8, 8)), []).tiles]
    ['mask']
    """
    row = GridRow(None if image is None else load_image(image),
                  None if mask is None else load_mask(mask),
                  [load_image(o) for o in outputs], title)
    if row.image is not None:
        before = thumbnail(row.image, max_side)
        row.tiles.append(("before", before))
        if row.mask is not None:
            row.tiles.append(("mask", mask_overlay(before, row.mask)))
    elif row.mask is not None:
        row.tiles.append(("mask", thumbnail(row.mask, max_side).convert("RGB")))
    for name, out in zip(_after_names(len(row.outputs)), row.outputs, strict=True):
        row.tiles.append((name, thumbnail(out, max_side)))
    if not row.tiles:
        raise ValueError("nothing to show: give a result, outputs, or an image")
    return row


def grid_html(rows: Sequence[GridRow]) -> str:
    """Static HTML for prepared rows (what ``show_grid(..., return_html=True)`` returns): base64
    thumbnails in a table, so it survives nbconvert and GitHub's notebook rendering."""
    parts = ["<div class='fluxnb-grid'><table style='border-collapse:collapse'>"]
    for row in rows:
        if row.title:
            parts.append(f"<tr><td colspan='{len(row.tiles)}' style='text-align:left;"
                         f"font-weight:bold;padding-top:6px'>{_html.escape(row.title)}</td></tr>")
        parts.append("<tr>")
        for name, tile in row.tiles:
            parts.append(
                "<td style='text-align:center;vertical-align:top;padding:2px'>"
                f"<img src='{preview_data_uri(tile)}' width='{tile.width}' height='{tile.height}' "
                f"alt='{_html.escape(name)}'><br><small>{_html.escape(name)}</small></td>")
        parts.append("</tr>")
    parts.append("</table></div>")
    return "".join(parts)
