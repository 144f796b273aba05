"""The sweep explorer's data side (no widgets): the cells of a sweep indexed by their axis values,
their pictures at display size (cached), and the text shown beside them.

>>> key_of({"steps": 4, "strength": 0.5}, ["steps", "strength"])
(('n', 4.0), ('n', 0.5))
>>> fmt_value(0.30000000000000004), fmt_value("sha256:0123456789abcdef")
('0.3', 'sha:01234567')
"""

from __future__ import annotations

import html
import io
import math
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..schema import short_name

__all__ = ["CellIndex", "DisplayCache", "cell_html", "fmt_value", "is_numeric_axis", "key_of"]

Key = tuple[tuple[Any, ...], ...]

#: The metric columns shown beside a cell (those the frame has).
_METRICS = ("change_in_mask", "mad_outside", "psnr_outside")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_numeric_axis(values: Sequence[Any]) -> bool:
    """True when every value of an axis is a number (then it gets a slider)."""
    return bool(values) and all(_is_number(v) for v in values)


def _norm(value: Any) -> tuple[Any, ...]:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):   # numpy scalars
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ("none",)
    if _is_number(value):
        return ("n", round(float(value), 9))
    return ("s", str(value))


def key_of(values: Mapping[str, Any], axes: Sequence[str]) -> Key:
    """The index key of a cell: its value on each axis, numbers compared as rounded floats."""
    return tuple(_norm(values.get(name)) for name in axes)


def fmt_value(value: Any) -> str:
    """A short label for an axis value (numbers with ``%g``, image hashes shortened)."""
    if _is_number(value):
        return f"{float(value):g}" if isinstance(value, float) else str(value)
    text = str(value)
    if text.startswith("sha256:"):
        return "sha:" + text[7:15]
    return text if len(text) <= 40 else text[:37] + "..."


class CellIndex:
    """The rows of a sweep frame by cell key (the first image of each cell, the latest attempt).

    >>> import pandas as pd
    >>> rows = pd.DataFrame([{"cell": 0, "steps": 4, "status": "ok", "image_index": 0}])
    >>> index = CellIndex(rows, ["steps"])
    >>> index.get({"steps": 4.0})["cell"], index.get({"steps": 8}), len(index)
    (0, None, 1)
    """

    def __init__(self, frame: Any, axes: Sequence[str]):
        self.axes = list(axes)
        self._rows: dict[Key, dict[str, Any]] = {}
        for row in frame.to_dict("records") if len(frame) else []:
            key = key_of(row, self.axes)
            index = row.get("image_index")
            first = index is None or (isinstance(index, float) and math.isnan(index)) or int(index) == 0
            if first or key not in self._rows:
                self._rows[key] = row

    def get(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._rows.get(key_of(values, self.axes))

    def __len__(self) -> int:
        return len(self._rows)


def _input_file(folder: Path, label: Any) -> Path | None:
    """The saved input image behind an axis/column value ``sha256:<prefix>`` (None for URLs)."""
    if not isinstance(label, str) or not label.startswith("sha256:"):
        return None
    prefix = label.split(":", 1)[1][:12]
    found = sorted((folder / "inputs").glob(f"{prefix}*"))
    return found[0] if found else None


def _display_jpeg(path: Path, width: int, size: tuple[int, int] | None = None) -> bytes:
    """``path`` scaled to ``width`` pixels wide (or to ``size``), as JPEG bytes."""
    with Image.open(path) as img:
        img.draft("RGB", (width, width))        # JPEG: decode at a reduced scale
        rgb = img.convert("RGB")
    if size is None:
        height = max(1, round(rgb.height * width / rgb.width))
        size = (width, height) if rgb.width > width else rgb.size
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=88)
    return out.getvalue()


def blank_jpeg(size: tuple[int, int], shade: int = 225) -> bytes:
    """A plain grey picture: the place of a failed cell's output, or of an input that was a URL."""
    out = io.BytesIO()
    Image.new("RGB", size, (shade, shade, shade)).save(out, "JPEG", quality=80)
    return out.getvalue()


class DisplayCache:
    """Output and input pictures at display size, JPEG-encoded once per file (least recently used
    first out past ``limit`` entries); a cell's input is scaled to its output's display size."""

    def __init__(self, folder: Path, width: int, limit: int = 1024):
        self.folder, self.width, self.limit = Path(folder), int(width), int(limit)
        self._store: OrderedDict[tuple[str, tuple[int, int] | None], bytes] = OrderedDict()
        self.hits = self.misses = 0

    def _get(self, path: Path, size: tuple[int, int] | None) -> bytes:
        key = (os.fspath(path), size)
        blob = self._store.get(key)
        if blob is not None:
            self.hits += 1
            self._store.move_to_end(key)
            return blob
        self.misses += 1
        blob = _display_jpeg(path, self.width, size)
        self._store[key] = blob
        while len(self._store) > self.limit:
            self._store.popitem(last=False)
        return blob

    def output(self, row: Mapping[str, Any]) -> bytes | None:
        """The cell's output at display size, or None when it has none (failed, file gone)."""
        file = row.get("file")
        if row.get("status") != "ok" or not isinstance(file, str):
            return None
        path = Path(file)
        if not path.is_file():                  # a folder moved or copied: its own images/
            path = self.folder / "images" / path.name
            if not path.is_file():
                return None
        return self._get(path, None)

    def display_size(self, row: Mapping[str, Any]) -> tuple[int, int]:
        width, height = row.get("width"), row.get("height")
        if isinstance(width, (int, float)) and isinstance(height, (int, float)) \
                and not (math.isnan(width) or math.isnan(height)):
            w, h = int(width), int(height)
            if w > self.width:
                return self.width, max(1, round(h * self.width / w))
            return w, h
        return self.width, self.width

    def input(self, row: Mapping[str, Any]) -> bytes:
        """The cell's input image at its output's display size (grey when it was a URL)."""
        size = self.display_size(row)
        path = _input_file(self.folder, row.get("image_url"))
        return self._get(path, size) if path is not None else blank_jpeg(size)


def _fmt_number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def cell_html(row: Mapping[str, Any] | None, values: Mapping[str, Any],
              pinned: Mapping[str, Any] | None = None) -> str:
    """The text beside the picture: parameters, status, request id, seed, metrics, or the error."""
    esc = html.escape
    params = ", ".join(f"{short_name(k)}={fmt_value(v)}" for k, v in values.items())
    lines = [f"<div class='fluxnb-explorer-params'><b>{esc(params)}</b></div>"]
    if row is None:
        lines.append("<div class='fluxnb-explorer-status'>status: not run yet</div>")
    else:
        status = str(row.get("status"))
        lines.append(f"<div class='fluxnb-explorer-status'>status: {esc(status)}"
                     f" &middot; cell {esc(str(row.get('cell')))}</div>")
        lines.append(f"<div>request id: <code>{esc(str(row.get('request_id') or '-'))}</code></div>")
        lines.append(f"<div>seed: {esc(_fmt_number(row.get('seed')))} &middot; "
                     f"total {esc(_fmt_number(row.get('total_s')))} s</div>")
        if status != "ok":
            lines.append(f"<div class='fluxnb-error' style='color:#b00020'>"
                         f"{esc(str(row.get('error') or 'failed'))}</div>")
        else:
            metrics = " &middot; ".join(f"{name} {esc(_fmt_number(row.get(name)))}"
                                        for name in _METRICS if name in row)
            lines.append(f"<div class='fluxnb-explorer-metrics'>{metrics}</div>")
    if pinned is not None:
        text = ", ".join(f"{short_name(k)}={fmt_value(v)}" for k, v in pinned.items())
        lines.append(f"<div class='fluxnb-explorer-pinned'>comparing with: {esc(text)}</div>")
    return "".join(lines)
