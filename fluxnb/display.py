"""Show results as before / mask overlay / after grids: a matplotlib figure, or static HTML.

``show_grid`` takes one result, a list of results (one row each), or explicit images. Every image
is shrunk to a thumbnail first (``max_side``), so 1024² outputs stay fast. Titles carry the
parameters (``steps=28 · strength=0.85 · seed=42``). With ``return_html=True`` the grid is plain
HTML with base64 thumbnails: it survives nbconvert and GitHub's notebook rendering, no widget
state needed. The pure half (titles, rows, thumbnails, the HTML) lives in :mod:`fluxnb.pictures`;
this module adds the matplotlib figure and the dispatch over results.

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

import io
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from PIL import Image

from .pictures import THUMBNAIL_SIDE, GridRow, grid_html, grid_row, param_title
from .result import InpaintResult

__all__ = ["THUMBNAIL_SIDE", "GridFigure", "grid_html", "param_title", "show_grid"]


def _rows(results: Any, image: Any, mask: Any, outputs: Any, params: Any,
          titles: Sequence[str] | None, max_side: int) -> list[GridRow]:
    """One :class:`~fluxnb.pictures.GridRow` per result (or one for explicit images)."""
    if isinstance(results, InpaintResult):
        results = [results]
    elif isinstance(results, Image.Image):
        outputs, results = [results], None
    elif isinstance(results, Sequence) and results and all(isinstance(r, Image.Image) for r in results):
        outputs, results = list(results), None
    specs: list[tuple[Any, Any, list[Any], str]] = []
    if results is None:
        row_params = params if isinstance(params, Mapping) or params is None else (params or [None])[0]
        specs.append((image, mask, list(outputs or []), param_title(row_params)))
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
            specs.append((img, msk, list(result.pil_images()), param_title(p, seed=result.seed)))
    if titles is not None:
        if len(titles) != len(specs):
            raise ValueError(f"titles has {len(titles)} entries for {len(specs)} rows")
        specs = [(img, msk, outs, title) for (img, msk, outs, _), title in zip(specs, titles, strict=True)]
    return [grid_row(img, msk, outs, title, max_side=max_side) for img, msk, outs, title in specs]


class GridFigure(Figure):
    """The matplotlib figure :func:`show_grid` returns; it displays itself as PNG anywhere."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


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
