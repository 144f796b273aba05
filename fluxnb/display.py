"""Show results as before / mask overlay / after grids: a matplotlib figure, or static HTML.

``show_grid`` takes one result, a list of results (one row each), or explicit images. Every image
is shrunk to a thumbnail first (``max_side``), so 1024² outputs stay fast. Titles carry the
parameters (``steps=28 · strength=0.85 · seed=42``). With ``return_html=True`` the grid is plain
HTML with base64 thumbnails: it survives nbconvert and GitHub's notebook rendering, no widget
state needed.

>>> from PIL import Image
>>> img = Image.new("RGB", (64, 48), "gray"); m = Image.new("L", (64, 48), 0)
>>> html = show_grid(image=img, mask=m, outputs=[img], params={"num_inference_steps": 8},
...                  return_html=True)
>>> html.count("<img"), "steps=8" in html
(3, True)
>>> fig = show_grid(image=img, mask=m, outputs=[img, img]); len(fig.axes)
4
"""

from __future__ import annotations

import html as _html
import io
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure
from PIL import Image

from .figures import mask_overlay
from .images import load_image, load_mask, preview_data_uri, thumbnail
from .result import InpaintResult
from .schema import ALIASES, short_name

__all__ = ["GridFigure", "grid_html", "param_title", "show_grid"]

#: Default longest side of every thumbnail in a grid.
THUMBNAIL_SIDE = 384

# the fields a title shows, in title order (each under its schema short name: ``steps=28``)
_TITLE_FIELDS = ("num_inference_steps", "guidance_scale", "strength", "num_images", "seed")


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
class _Row:
    image: Image.Image | None
    mask: Image.Image | None
    outputs: list[Image.Image]
    title: str
    tiles: list[tuple[str, Image.Image]] = field(default_factory=list)


def _rows(results: Any, image: Any, mask: Any, outputs: Any, params: Any,
          titles: Sequence[str] | None, max_side: int) -> list[_Row]:
    if isinstance(results, InpaintResult):
        results = [results]
    elif isinstance(results, Image.Image):
        outputs, results = [results], None
    elif isinstance(results, Sequence) and results and all(isinstance(r, Image.Image) for r in results):
        outputs, results = list(results), None
    rows: list[_Row] = []
    if results is None:
        row_params = params if isinstance(params, Mapping) or params is None else (params or [None])[0]
        rows.append(_Row(None if image is None else load_image(image),
                         None if mask is None else load_mask(mask),
                         [load_image(o) for o in (outputs or [])],
                         param_title(row_params)))
    else:
        results = list(results)
        if not all(isinstance(r, InpaintResult) for r in results):
            raise TypeError("show_grid takes an InpaintResult, a list of them, or images")
        if params is not None and not isinstance(params, Mapping) and len(params) != len(results):
            raise ValueError(f"params has {len(params)} entries for {len(results)} results")
        for i, result in enumerate(results):
            p = params if isinstance(params, Mapping) or params is None else params[i]
            p = p if p is not None else getattr(result, "params", None)
            img = image if image is not None else getattr(result, "input_image", None)
            msk = mask if mask is not None else getattr(result, "input_mask", None)
            rows.append(_Row(None if img is None else load_image(img),
                             None if msk is None else load_mask(msk),
                             result.pil_images(), param_title(p, seed=result.seed)))
    if titles is not None:
        if len(titles) != len(rows):
            raise ValueError(f"titles has {len(titles)} entries for {len(rows)} rows")
        for row, title in zip(rows, titles, strict=True):
            row.title = title
    for row in rows:
        if row.image is not None:
            before = thumbnail(row.image, max_side)
            row.tiles.append(("before", before))
            if row.mask is not None:
                row.tiles.append(("mask", mask_overlay(before, row.mask)))
        elif row.mask is not None:
            row.tiles.append(("mask", thumbnail(row.mask, max_side).convert("RGB")))
        n = len(row.outputs)
        for j, out in enumerate(row.outputs):
            row.tiles.append((f"after {j + 1}" if n > 1 else "after", thumbnail(out, max_side)))
        if not row.tiles:
            raise ValueError("nothing to show: give a result, outputs, or an image")
    return rows


class GridFigure(Figure):
    """The matplotlib figure :func:`show_grid` returns; it displays itself as PNG anywhere."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def grid_html(rows: Sequence[Any]) -> str:
    """Static HTML for prepared rows (what ``show_grid(..., return_html=True)`` returns)."""
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


def show_grid(
    results: Any = None,
    *,
    image: Any = None,
    mask: Any = None,
    outputs: Sequence[Any] | None = None,
    params: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
    titles: Sequence[str] | None = None,
    max_side: int = THUMBNAIL_SIDE,
    tile_inches: float = 3.0,
    return_html: bool = False,
) -> GridFigure | str:
    """Before / mask overlay / after, one row per result; returns the figure (or HTML).

    ``results``: an :class:`~fluxnb.InpaintResult`, a list of them, or output images. ``image``
    and ``mask`` are the inputs (a result made by the panel already knows them, see
    ``InpaintResult.with_inputs``). ``params`` (one mapping, or one per result) become the row
    titles, with the seed each result reports; ``titles`` overrides them. The figure displays
    itself when it is a cell's last expression; it is not registered with pyplot, so it is
    shown once and never leaks.

    >>> show_grid(result, image=image, mask=mask)                      # doctest: +SKIP
    >>> show_grid([r1, r2], image=image, mask=mask, params=[p1, p2])   # doctest: +SKIP
    >>> html = show_grid(result, image=image, mask=mask, return_html=True)  # doctest: +SKIP
    """
    if max_side < 16:
        raise ValueError(f"max_side={max_side} is too small (>= 16)")
    rows = _rows(results, image, mask, outputs, params, titles, max_side)
    if return_html:
        return grid_html(rows)
    ncols = max(len(r.tiles) for r in rows)
    aspect = max(t.height / t.width for r in rows for _, t in r.tiles)
    fig = GridFigure(figsize=(tile_inches * ncols, tile_inches * aspect * len(rows) + 0.5 * len(rows)),
                     layout="constrained")
    # one subfigure per row, so each row's title is centred over the whole row (not one column)
    for row, sub in zip(rows, fig.subfigures(len(rows), 1, squeeze=False)[:, 0], strict=True):
        if row.title:
            sub.suptitle("\n".join(textwrap.wrap(row.title, 34 * ncols)), fontsize=10)
        for c, ax in enumerate(sub.subplots(1, ncols, squeeze=False)[0]):
            ax.set_axis_off()
            if c < len(row.tiles):
                name, tile = row.tiles[c]
                ax.imshow(tile, interpolation="antialiased")
                ax.set_title(name, fontsize=9)
    return fig
