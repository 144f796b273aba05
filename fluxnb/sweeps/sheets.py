"""Pictures of a sweep: the contact sheet (outputs on a labelled grid) and metric plots.

Both return a :class:`~fluxnb.sweeps.pages.Sheet`: it shows itself in a notebook
(``_repr_png_``), and ``save(path)`` writes a PNG whose text chunks hold the sweep's parameters
(``fluxnb-sweep`` as JSON, ``parameters`` as one readable line), so a picture can be traced back
to what made it; ``save("sweep.pdf")`` writes a PDF, one page per z value of a 3-axis sheet.

Both draw any :class:`SweepData` (a frame, a run folder, the plan and its axes):
:class:`~fluxnb.sweeps.result.Sweep` is one, and its ``contact_sheet``/``plot`` call this module,
never the other way round.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..schema import ALIASES
from .labels import axis_label, fmt_value
from .pages import Sheet

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from PIL import Image

__all__ = ["Sheet", "SweepData", "contact_sheet", "crop_box", "metric_plot", "sweep_metadata"]


class SweepData(Protocol):
    """What the pictures read of a sweep: its rows, run folder, plan and axes."""

    @property
    def frame(self) -> pd.DataFrame: ...  # pragma: no cover

    @property
    def folder(self) -> Path: ...  # pragma: no cover

    @property
    def plan(self) -> Mapping[str, Any]: ...  # pragma: no cover

    @property
    def axes(self) -> Mapping[str, Sequence[Any]]: ...  # pragma: no cover

    def column(self, name: str) -> str: ...  # pragma: no cover  (axis name -> frame column)

_FAIL = "#c62828"
_BLANK = "#eeeeee"


def sweep_metadata(sweep: SweepData, **extra: Any) -> dict[str, Any]:
    """What a saved picture records: axes, base inputs, seed policy, the seed of every cell."""
    plan = sweep.plan
    return {
        "axes": plan.get("axes", {}),
        "base": plan.get("base", {}),
        "seed_policy": plan.get("seed_policy"),
        "random_state": plan.get("random_state"),
        "backend": plan.get("backend"),
        "seeds": {str(c.get("cell")): c.get("seed") for c in plan.get("cells") or []},
        **extra,
    }


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _input_image(sweep: SweepData, label: Any, mask: bool) -> Image.Image | None:
    from PIL import Image

    if not isinstance(label, str) or not label.startswith("sha256:"):
        return None
    prefix = label.split(":", 1)[1]
    for path in sorted((sweep.folder / "inputs").glob(f"{prefix[:12]}*")):
        with Image.open(path) as img:
            return img.convert("L" if mask else "RGB")
    return None


def _pick(frame: pd.DataFrame, column: str, value: Any) -> pd.DataFrame:
    series = frame[column]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        import numpy as np

        numbers = series.astype("float64", errors="ignore") if series.dtype != object else series
        try:
            return frame[np.isclose(numbers.astype("float64"), float(value))]
        except (TypeError, ValueError):
            pass
    return frame[series == value]


def _fixed(sweep: SweepData, used: Sequence[str], where: Mapping[str, Any] | None) -> dict[str, Any]:
    fixed = {sweep.column(k): v for k, v in (where or {}).items()}
    for name, values in sweep.axes.items():
        if name not in used and name not in fixed and values:
            fixed[name] = values[0]
    return fixed


def _blank(ax: Axes, text: str, detail: str, fontsize: float, color: str) -> None:
    ax.set_facecolor(_BLANK)
    ax.text(0.5, 0.58, text, ha="center", va="center", color=color, fontsize=fontsize * 1.1,
            fontweight="bold", transform=ax.transAxes)
    if detail:
        ax.text(0.5, 0.3, "\n".join(textwrap.wrap(detail, 24)[:3]), ha="center", va="center",
                color="#444444", fontsize=fontsize * 0.7, transform=ax.transAxes)


def crop_box(mask: Image.Image, pad: float = 0.25) -> tuple[int, int, int, int] | None:
    """The mask's bounding box (pixels >= 128), grown by ``pad`` x its longer side (at least 16
    px) and clipped to the image; None for an empty mask.

    >>> from PIL import Image, ImageDraw
    >>> m = Image.new("L", (200, 100)); ImageDraw.Draw(m).rectangle((50, 40, 89, 59), fill=255)
    >>> crop_box(m)
    (34, 24, 106, 76)
    """
    box = mask.point(lambda v: 255 if v >= 128 else 0).getbbox()
    if box is None:
        return None
    left, top, right, bottom = box
    grow = max(16, round(max(right - left, bottom - top) * pad))
    return (max(0, left - grow), max(0, top - grow), min(mask.width, right + grow),
            min(mask.height, bottom + grow))


def _cropped(img: Image.Image, box: tuple[int, int, int, int] | None, size: tuple[int, int]) -> Image.Image:
    """``img`` cut to ``box`` (given in ``size`` pixels; scaled when ``img`` has another size)."""
    if box is None:
        return img
    sx, sy = img.width / size[0], img.height / size[1]
    return img.crop((round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)))


@dataclass
class _Grid:
    """Which axis runs across (``x``) and down (``y``), their values, and the rows to draw from
    (the axes not on the grid held at ``fixed``)."""

    x: str | None
    y: str | None
    xs: list[Any]
    ys: list[Any]
    fixed: dict[str, Any]
    frame: pd.DataFrame

    def cell(self, xv: Any, yv: Any) -> pd.DataFrame:
        cell = self.frame
        if self.x is not None:
            cell = _pick(cell, self.x, xv)
        if self.y is not None:
            cell = _pick(cell, self.y, yv)
        return cell


def _grid(sweep: SweepData, x: str | None, y: str | None, where: Mapping[str, Any] | None,
          z: str | None = None) -> _Grid:
    names = [n for n in sweep.axes if n != z]
    x = sweep.column(x) if x is not None else (names[0] if names else None)
    y = sweep.column(y) if y is not None else (next((n for n in names if n != x), None))
    xs = list(sweep.axes.get(x, [None])) if x is not None else [None]
    ys = list(sweep.axes.get(y, [None])) if y is not None else [None]
    fixed = _fixed(sweep, [n for n in (x, y, z) if n], where)
    frame = sweep.frame
    for name, value in fixed.items():
        frame = _pick(frame, name, value)
    return _Grid(x, y, xs, ys, fixed, frame)


@dataclass
class _Inputs:
    """The before image and the mask (None when the inputs were URLs), and the crop box."""

    before: Image.Image | None
    mask: Image.Image | None
    box: tuple[int, int, int, int] | None
    size: tuple[int, int]

    def cropped(self, img: Image.Image) -> Image.Image:
        return _cropped(img, self.box, self.size)


def _inputs(sweep: SweepData, crop: bool | float) -> _Inputs:
    first = sweep.frame.iloc[0] if len(sweep.frame) else None
    before = _input_image(sweep, first["image_url"], False) if first is not None else None
    mask = _input_image(sweep, first["mask_url"], True) if first is not None else None
    box = None
    if crop and mask is not None:
        box = crop_box(mask, 0.25 if crop is True else float(crop))
    return _Inputs(before, mask, box, mask.size if mask is not None else (1, 1))


def _draw_header(row_axes: Sequence[Axes], inputs: _Inputs, fontsize: float) -> None:
    from ..pictures import mask_overlay

    assert inputs.before is not None and inputs.mask is not None
    row_axes[0].imshow(inputs.cropped(inputs.before))
    row_axes[0].set_title("before", fontsize=fontsize)
    row_axes[1].imshow(inputs.cropped(mask_overlay(inputs.before, inputs.mask)))
    row_axes[1].set_title("mask", fontsize=fontsize)
    for ax in row_axes[2:]:
        ax.set_axis_off()


def _draw_cell(ax: Axes, cell: pd.DataFrame, image_index: int, inputs: _Inputs,
               fontsize: float) -> None:
    """The cell's output; or blank with a red mark and its error; or "not run"."""
    from PIL import Image

    ok = cell[(cell["status"] == "ok") & (cell["image_index"] == image_index)]
    if len(ok) and ok.iloc[-1]["file"] and Path(str(ok.iloc[-1]["file"])).is_file():
        with Image.open(str(ok.iloc[-1]["file"])) as img:
            ax.imshow(inputs.cropped(img.convert("RGB")))
    elif len(cell):
        status = str(cell.iloc[-1]["status"])
        _blank(ax, "\u2717 " + ("failed" if status == "error" else status),
               str(cell.iloc[-1]["error"] or ""), fontsize, _FAIL)
    else:
        _blank(ax, "not run", "", fontsize, "#777777")


def _draw_grid(axes: Any, grid: _Grid, image_index: int, inputs: _Inputs,
               fontsize: float) -> None:
    for r, yv in enumerate(grid.ys):
        for c, xv in enumerate(grid.xs):
            ax = axes[r][c]
            _draw_cell(ax, grid.cell(xv, yv), image_index, inputs, fontsize)
            if r == 0 and grid.x is not None:
                ax.set_title(axis_label(grid.x, xv), fontsize=fontsize)
            if c == 0 and grid.y is not None:
                ax.set_ylabel(axis_label(grid.y, yv), fontsize=fontsize)


def _sheet_title(sweep: SweepData, grid: _Grid, zoomed: bool, z: str | None = None) -> str:
    """``x × y [× z]  (held=value, seed=…)``, plus a line when zoomed to the mask."""
    seeds = sorted({int(s) for s in sweep.frame["seed"].dropna()}) if len(sweep.frame) else []
    title = " \u00d7 ".join(n for n in (grid.x, grid.y, z) if n) or "sweep"
    extras = [f"{k}={fmt_value(v, k)}" for k, v in grid.fixed.items() if k != z]
    if seeds:
        extras.append(f"seed={seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds")
    if extras:
        title += "  (" + ", ".join(extras) + ")"
    if zoomed:
        title += "\nzoomed to the mask"
    return title


def _size(grid: _Grid, header: bool, tile: float) -> tuple[float, float]:
    ncols = max(len(grid.xs), 2 if header else 1)
    return tile * ncols + (0.6 if grid.y else 0.2), tile * (len(grid.ys) + header) + 0.9


def _draw_sheet(fig: Any, grid: _Grid, inputs: _Inputs, header: bool, image_index: int,
                fontsize: float, title: str) -> None:
    """One labelled grid (with the header row) into ``fig``: a Figure or a SubFigure."""
    ncols = max(len(grid.xs), 2 if header else 1)
    axes = fig.subplots(len(grid.ys) + (1 if header else 0), ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if header:
        _draw_header(axes[0], inputs, fontsize)
    _draw_grid(axes[1:] if header else axes, grid, image_index, inputs, fontsize)
    if grid.x is not None:
        fig.supxlabel(f"{grid.x} (columns)", fontsize=fontsize)
    if grid.y is not None:
        fig.supylabel(f"{grid.y} (rows)", fontsize=fontsize)
    fig.suptitle(title, fontsize=fontsize * 1.2)


def _z_axis(sweep: SweepData, z: str, x: str | None, y: str | None) -> str:
    """The z axis's name; a ValueError naming the sweep's axes when it is not one (or is x/y)."""
    name = ALIASES.get(z, z)
    axes = ", ".join(sweep.axes) or "none"
    if name not in sweep.axes:
        raise ValueError(f"z={z!r} is not an axis of this sweep (its axes: {axes}); pass one of "
                         "them as z=")
    if name in {ALIASES.get(n, n) for n in (x, y) if n}:
        raise ValueError(f"z={z!r} is already on the grid as x or y; pick another axis for z "
                         f"(axes: {axes})")
    return name


def _z_sheet(sweep: SweepData, x: str | None, y: str | None, z: str, where: Mapping[str, Any] | None,
             inputs: _Inputs, header: bool, title: str | None, options: dict[str, Any]) -> Sheet:
    """One labelled sheet per z value stacked down one figure (the header once, at the top);
    the PDF has one page per z value, each with its header."""
    z = _z_axis(sweep, z, x, y)
    if z in {ALIASES.get(k, k) for k in where or {}}:
        raise ValueError(f"{z} is the z axis, so where= cannot also hold it")
    zs = list(sweep.axes[z])
    grids = [_grid(sweep, x, y, {**(where or {}), z: zv}, z=z) for zv in zs]
    tile, fontsize, image_index = options["tile"], options["fontsize"], options["image_index"]
    if title is None:
        title = _sheet_title(sweep, grids[0], inputs.box is not None, z=z)
    heads = [f"{z}: {fmt_value(zv, z)}" for zv in zs]
    sizes = [_size(g, header and i == 0, tile) for i, g in enumerate(grids)]
    fig = _new_figure(max(w for w, _ in sizes), sum(h for _, h in sizes) + 0.6)
    blocks = fig.subfigures(len(zs), 1, squeeze=False, height_ratios=[h for _, h in sizes])
    for i, (block, grid) in enumerate(zip(blocks.flat, grids, strict=True)):
        _draw_sheet(block, grid, inputs, header and i == 0, image_index, fontsize, heads[i])
    chars = max(16, int(fig.get_figwidth() * 72 / (fontsize * 1.3 * 0.62)))   # fits the width
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in title.split("\n")),
                 fontsize=fontsize * 1.3, fontweight="bold")

    def pages() -> list[Figure]:
        out = []
        for head, grid in zip(heads, grids, strict=True):
            page = _new_figure(*_size(grid, header, tile))
            _draw_sheet(page, grid, inputs, header, image_index, fontsize, f"{title}\n{head}")
            out.append(page)
        return out

    box = inputs.box
    return Sheet(fig, sweep_metadata(sweep, title=title, x=grids[0].x, y=grids[0].y, z=z,
                                     where={k: v for k, v in grids[0].fixed.items() if k != z},
                                     image_index=image_index, crop=list(box) if box else None),
                 pages=pages)


def contact_sheet(
    sweep: SweepData,
    x: str | None = None,
    y: str | None = None,
    z: str | None = None,
    *,
    title: str | None = None,
    where: Mapping[str, Any] | None = None,
    image_index: int = 0,
    tile: float = 2.2,
    fontsize: float = 12,
    show_inputs: bool = True,
    crop: bool | float = False,
) -> Sheet:
    """Outputs on a grid: one column per ``x`` value, one row per ``y`` value, labelled, with a
    title; the before image and the mask (over the image) once, in a header row; a failed cell
    is blank with a red mark and its error, a cell not run says so. Axes not on the grid are held
    at ``where`` (default: their first value, named in the title). ``tile`` is the size of each
    picture in inches and ``fontsize`` the label size. ``crop=True`` (or a padding fraction,
    e.g. ``0.5``) zooms every picture to the masked area, where the differences are.

    ``z`` (a third axis): one labelled sheet per z value, stacked down one picture;
    ``save("sweep.pdf")`` then writes one page per z value.

    >>> sweep.contact_sheet(x="steps", y="strength", z="seed").save("sweep.pdf")  # doctest: +SKIP
    """
    inputs = _inputs(sweep, crop)
    header = show_inputs and inputs.before is not None and inputs.mask is not None
    if z is not None:
        return _z_sheet(sweep, x, y, z, where, inputs, header, title,
                        {"tile": tile, "fontsize": fontsize, "image_index": image_index})
    grid = _grid(sweep, x, y, where)
    fig = _new_figure(*_size(grid, header, tile))
    if title is None:
        title = _sheet_title(sweep, grid, inputs.box is not None)
    _draw_sheet(fig, grid, inputs, header, image_index, fontsize, title)
    box = inputs.box
    return Sheet(fig, sweep_metadata(sweep, title=title, x=grid.x, y=grid.y, where=grid.fixed,
                                     image_index=image_index, crop=list(box) if box else None))


def metric_plot(
    sweep: SweepData,
    metric: str = "change_in_mask",
    x: str | None = None,
    hue: str | None = None,
    *,
    title: str | None = None,
    fontsize: float = 12,
    size: tuple[float, float] = (6.0, 4.0),
) -> Sheet:
    """``metric`` (mean over images) against parameter ``x``, one line per ``hue`` value."""
    frame = sweep.frame
    if metric not in frame.columns:
        raise KeyError(f"no metric column {metric!r}")
    names = list(sweep.axes)
    x = sweep.column(x) if x is not None else (names[0] if names else None)
    if x is None:
        raise ValueError("this sweep has no axis to plot against; pass x=")
    hue = sweep.column(hue) if hue is not None else next((n for n in names if n != x), None)
    ok = frame[frame["status"] == "ok"]
    fig = _new_figure(*size)
    ax = fig.subplots()
    groups = [(None, ok)] if hue is None else [(v, _pick(ok, hue, v)) for v in sweep.axes[hue]]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sweep.axes[x])
    for value, group in groups:
        xs, ys = [], []
        for i, xv in enumerate(sweep.axes[x]):
            values = _pick(group, x, xv)[metric].astype("float64")
            values = values[values.map(math.isfinite)]
            if len(values):
                xs.append(xv if numeric else i)
                ys.append(float(values.mean()))
        label = None if hue is None else axis_label(hue, value).replace("\n", "")
        ax.plot(xs, ys, marker="o", label=label)
    if not numeric:
        ax.set_xticks(range(len(sweep.axes[x])), [fmt_value(v, x) for v in sweep.axes[x]])
    ax.set_xlabel(x, fontsize=fontsize)
    ax.set_ylabel(metric, fontsize=fontsize)
    ax.tick_params(labelsize=fontsize * 0.85)
    if hue is not None:
        ax.legend(fontsize=fontsize * 0.85, title=hue, title_fontsize=fontsize * 0.85)
    ax.grid(alpha=0.3)
    title = title or f"{metric} vs {x}" + (f" by {hue}" if hue else "")
    ax.set_title(title, fontsize=fontsize * 1.1)
    return Sheet(fig, sweep_metadata(sweep, title=title, metric=metric, x=x, hue=hue))
