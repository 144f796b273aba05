""":class:`SweepExplorer`: flip through a sweep's cells with one control per axis and compare them
with a swipe divider. ``Sweep.explore()`` makes one.

A slider for each numeric axis (keyboard focus on it: the arrow keys step along that axis), a
toggle or dropdown for text and image axes; the selected cell's output is shown beside its input
in a :class:`~fluxnb.widgets.swipe.SwipeView`, or beside a pinned cell ("compare with"), with
its parameters, status, request id, seed and metrics (its error when it failed). Pictures are
sent at display size and encoded once per cell. On a sweep still running it follows the run
folder: new rows appear as they are logged (``watch=True``, or pass ``progress=explorer.progress``
to the sweep).

>>> explorer = fluxnb.Sweep.load("runs/steps-x-strength").explore()      # doctest: +SKIP
>>> explorer.select(steps=8, strength=0.5); explorer.selected["status"]  # doctest: +SKIP
'ok'
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ..schema import short_name
from .explorer_cells import CellIndex, DisplayCache, blank_jpeg, cell_html, fmt_value, is_numeric_axis
from .swipe import SwipeView

if TYPE_CHECKING:  # pragma: no cover
    from ..sweeps.result import Sweep

__all__ = ["SweepExplorer"]

#: Toggle buttons up to this many values, a dropdown past it.
_TOGGLE_MAX = 5
_ROWS_FILE = "rows.jsonl"


class SweepExplorer:
    """A widget over a :class:`~fluxnb.sweeps.Sweep` (``Sweep.load(folder).explore()`` for a
    run folder, also one whose sweep is still running).

    ``controls`` maps each axis (frame column name) to its control; ``select(**values)`` sets
    them from code (axis names or aliases), ``step(axis, n)`` moves one along its axis;
    ``selected`` is the shown cell's row (a dict; None before it has run); ``pin()`` /
    ``unpin()`` are the "compare with" button; ``refresh()`` re-reads the run folder (``watch``
    does so in a background thread until every cell has a row); ``close()`` stops watching.
    """

    def __init__(self, sweep: Sweep, *, width: int = 512, watch: bool | None = None,
                 interval: float = 0.5):
        self.sweep = sweep
        self.folder = Path(self.sweep.folder)
        self.width = int(width)
        self.images = DisplayCache(self.folder, self.width)
        self.controls: dict[str, W.ValueWidget] = {}
        self.selected: dict[str, Any] | None = None
        self.pinned: dict[str, Any] | None = None
        self._pinned_values: dict[str, Any] | None = None
        self._lock = threading.RLock()
        self._holding = False
        self._stamp: tuple[int, int] | None = self._file_stamp()
        self._index = CellIndex(self.sweep.frame, list(self.sweep.axes))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._build()
        self._show()
        if watch if watch is not None else not self.finished:
            self.watch(interval)

    # -- the widgets -------------------------------------------------------------------------

    def _build(self) -> None:
        self.axis_box = W.VBox(layout=W.Layout(min_width="320px"))
        self.compare_button = W.ToggleButton(value=False, description="compare with this cell",
                                             tooltip="pin the shown cell: the swipe compares it with "
                                                     "the cell you select next", icon="thumb-tack",
                                             layout=W.Layout(width="max-content"))
        self.compare_button.observe(self._on_compare, names="value")
        self.info = W.HTML(layout=W.Layout(max_width="420px"))
        self.info.add_class("fluxnb-explorer-info")
        self.progress_text = W.HTML()
        self.swipe = SwipeView(blank_jpeg((self.width, self.width)), blank_jpeg((self.width, self.width)),
                               labels=("input", "output"), width=self.width)
        side = W.VBox([self.axis_box, self.compare_button, self.info, self.progress_text],
                      layout=W.Layout(padding="0 0 0 12px"))
        self.widget = W.HBox([self.swipe, side])
        self.widget.add_class("fluxnb-explorer")
        self._build_controls()

    def _build_controls(self) -> None:
        controls: dict[str, W.ValueWidget] = {}
        for name, values in self.sweep.axes.items():
            options = [(fmt_value(v), v) for v in values]
            label = short_name(name)
            if is_numeric_axis(values):
                control: W.ValueWidget = W.SelectionSlider(
                    options=options, value=values[0], description=label, continuous_update=False,
                    style={"description_width": "90px"}, layout=W.Layout(width="320px"))
            elif len(values) <= _TOGGLE_MAX:
                control = W.ToggleButtons(options=options, value=values[0], description=label,
                                          style={"description_width": "90px", "button_width": "auto"})
            else:
                control = W.Dropdown(options=options, value=values[0], description=label,
                                     style={"description_width": "90px"})
            control.add_class(f"fluxnb-axis-{label}")
            control.observe(self._on_control, names="value")
            controls[name] = control
        self.controls = controls
        self.axis_box.children = tuple(controls.values())

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        cell = None if self.selected is None else self.selected.get("cell")
        return (f"SweepExplorer({len(self._index)}/{self.sweep.cells} cells, cell={cell}, "
                f"pinned={self.pinned is not None}; folder={str(self.folder)!r})")

    # -- selection ---------------------------------------------------------------------------

    @property
    def values(self) -> dict[str, Any]:
        """The selected value on each axis."""
        return {name: control.value for name, control in self.controls.items()}

    def select(self, **values: Any) -> dict[str, Any] | None:
        """Show the cell with these axis values (the others unchanged); returns its row."""
        found: dict[str, Any] = {}
        for name, value in values.items():
            column = self.sweep.column(name)
            if column not in self.controls:
                raise KeyError(f"{name!r} is not an axis of this sweep; axes: {list(self.controls)}")
            allowed = list(self.sweep.axes[column])
            match = [v for v in allowed if fmt_value(v) == fmt_value(value)]
            if not match:
                raise ValueError(f"{name}={value!r} is not on the axis; its values: {allowed}")
            found[column] = match[0]
        self._holding = True
        try:
            for column, value in found.items():
                self.controls[column].value = value
        finally:
            self._holding = False
        self._show()
        return self.selected

    def step(self, axis: str, n: int = 1) -> dict[str, Any] | None:
        """Move ``n`` values along ``axis`` (clamped at its ends), as an arrow key does."""
        column = self.sweep.column(axis)
        values = list(self.sweep.axes[column])
        control = self.controls[column]
        here = next(i for i, v in enumerate(values) if fmt_value(v) == fmt_value(control.value))
        control.value = values[max(0, min(len(values) - 1, here + n))]
        return self.selected

    def pin(self) -> None:
        """"compare with": the swipe shows the pinned cell (left) against the selected one."""
        self.compare_button.value = True

    def unpin(self) -> None:
        """Back to input against output."""
        self.compare_button.value = False

    def _on_compare(self, change: dict[str, Any]) -> None:
        with self._lock:
            if change["new"]:
                self.pinned, self._pinned_values = self.selected, self.values
                self.compare_button.description = "stop comparing"
            else:
                self.pinned = self._pinned_values = None
                self.compare_button.description = "compare with this cell"
            self._show()

    def _on_control(self, _change: dict[str, Any]) -> None:
        if not self._holding:
            self._show()

    @staticmethod
    def _labels(values: dict[str, Any], other: dict[str, Any]) -> str:
        """``values`` on the axes where they differ from ``other`` (two at most)."""
        changed = [k for k in values if fmt_value(values[k]) != fmt_value(other.get(k))]
        return ", ".join(f"{short_name(k)}={fmt_value(values[k])}" for k in changed[:2]) or "same cell"

    @property
    def finished(self) -> bool:
        """True when every planned cell has a row (ok or not): nothing more will arrive."""
        frame = self.sweep.frame
        return bool(self.sweep.cells) and len(frame) > 0 and frame["cell"].nunique() >= self.sweep.cells

    def _show(self) -> None:
        """Put the selected cell (and the pinned one, or its input) in the swipe and the text."""
        with self._lock:
            values = self.values
            row = self._index.get(values)
            after = self.images.output(row) if row is not None else None
            size = self.images.display_size(row) if row is not None else (self.width, self.width)
            if after is None:
                after = blank_jpeg(size, 200 if row is not None else 235)
            if self.pinned is not None and self._pinned_values is not None:
                before = self.images.output(self.pinned) or blank_jpeg(size, 200)
                labels = (self._labels(self._pinned_values, values),
                          self._labels(values, self._pinned_values))
            else:
                before = self.images.input(row) if row is not None else blank_jpeg(size, 235)
                labels = ("input", "output" if row is None or row.get("status") == "ok"
                          else f"{row.get('status')}")
            self.swipe.set_images(before, after, labels=labels)
            self.info.value = cell_html(row, {k: v for k, v in values.items()}, self._pinned_values)
            done = len(self._index)
            self.progress_text.value = (f"<small>{done}/{self.sweep.cells} cells logged"
                                        f"{'' if self.finished else ' (still running?)'}"
                                        "</small>")
            self.selected = row      # last: whoever sees the new cell sees its text too

    # -- a sweep still running ---------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.folder / _ROWS_FILE).stat()
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns)

    def refresh(self) -> bool:
        """Re-read the run folder if its log changed; True when there was something new."""
        with self._lock:
            stamp = self._file_stamp()
            if stamp == self._stamp and self.sweep.axes:
                return False
            self._stamp = stamp
            fresh = type(self.sweep).load(self.folder)  # no import of the sweeps: no cycle
            axes_changed = list(fresh.axes.items()) != list(self.sweep.axes.items())
            self.sweep = fresh
            self._index = CellIndex(fresh.frame, list(fresh.axes))
            if axes_changed:
                self._build_controls()
            self._show()
            return True

    def progress(self, done: int, total: int, row: Any = None) -> None:
        """A sweep ``progress=`` callback: refresh after every logged row."""
        self.refresh()

    def watch(self, interval: float = 0.5) -> None:
        """Follow the run folder in a background thread until every cell has a row, or closed."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, args=(float(interval),),
                                        name="fluxnb-explorer-watch", daemon=True)
        self._thread.start()

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a half-written folder: try again next time
                continue
            if self.finished:
                return

    @property
    def watching(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop watching the folder and close the widgets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.widget.close()

