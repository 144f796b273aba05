""":class:`Sweep` (was ``sweeps/core.py``): the result of a sweep, a pandas DataFrame plus its folder.

>>> import tempfile
>>> sweep = Sweep.load(tempfile.mkdtemp())          # an empty folder: no rows yet
>>> len(sweep.frame), sweep.complete
(0, False)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .axes import ALIASES
from .log import RunLog
from .metrics import METRICS

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..widgets.explorer import SweepExplorer
    from .sheets import Sheet

__all__ = ["RESULT_COLUMNS", "Sweep"]

#: Columns every row has, after the cell index and axis columns; the other input fields follow.
RESULT_COLUMNS = (
    "status", "error", "seed", "image_index", "request_id", "queue_s", "inference_s", "total_s",
    "url", "file", "bytes", "sha256", "width", "height", *METRICS, "cached",
)
_TAIL = ("phase", "key", "attempt", "finished_at")


def _frame(rows: Sequence[Mapping[str, Any]], axes: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame([dict(r) for r in rows])
    lead = list(dict.fromkeys(["cell", *axes, *RESULT_COLUMNS]))
    for name in lead:
        if name not in frame.columns:
            frame[name] = None
    rest = [c for c in frame.columns if c not in lead and c not in _TAIL]
    tail = [c for c in _TAIL if c in frame.columns]
    return frame[lead + sorted(rest) + tail].reset_index(drop=True)


class Sweep:
    """A sweep's rows (``frame``: one per output image, or one per failed cell), its ``folder``
    and its ``axes`` (name -> values, images as short content hashes).

    ``complete`` is True when every planned cell has an ``ok`` row. ``interrupted`` is True when
    a KeyboardInterrupt stopped it (the finished rows are kept; rerun with the same folder to
    resume). ``Sweep.load(folder)`` restores a sweep from its run folder.
    """

    def __init__(self, frame: pd.DataFrame, *, folder: Path, plan: Mapping[str, Any],
                 interrupted: bool = False):
        self.frame = frame
        self.folder = Path(folder)
        self.plan: dict[str, Any] = dict(plan)
        self.axes: dict[str, list[Any]] = dict(self.plan.get("axes") or {})
        self.interrupted = interrupted

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, interrupted: bool = False) -> Sweep:
        """The sweep saved in ``folder``: the latest row(s) of every planned cell, in grid order.

        >>> sweep = fluxnb.Sweep.load("runs/steps-x-strength")      # doctest: +SKIP
        """
        log = RunLog(folder)
        plan = log.read_plan() or {}
        state = log.state()
        cells = plan.get("cells") or []
        rows: list[dict[str, Any]] = []
        if cells:
            for cell in cells:
                rows += state.rows.get(str(cell.get("key")), [])
        else:
            for found in state.rows.values():
                rows += found
        return cls(_frame(rows, list(plan.get("axes") or {})), folder=log.folder, plan=plan,
                   interrupted=interrupted)

    # -- summaries ---------------------------------------------------------------------------

    @property
    def cells(self) -> int:
        """How many cells the sweep planned."""
        return len(self.plan.get("cells") or [])

    @property
    def complete(self) -> bool:
        if not self.cells or self.frame.empty:
            return False
        ok = self.frame[self.frame["status"] == "ok"]["cell"].nunique()
        return bool(ok == self.cells)

    @property
    def failed(self) -> pd.DataFrame:
        """The rows whose status is not ``ok`` (errors and cancelled cells)."""
        return self.frame[self.frame["status"] != "ok"]

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        ok = int((self.frame["status"] == "ok").sum()) if len(self.frame) else 0
        axes = " x ".join(f"{name}[{len(v)}]" for name, v in self.axes.items()) or "no axes"
        return (f"Sweep({axes}: {self.cells} cells, {len(self.frame)} rows, {ok} ok, "
                f"{len(self.frame) - ok} not ok; folder={str(self.folder)!r})")

    def _repr_html_(self) -> str:
        html: str = self.frame.drop(columns=[c for c in _TAIL if c in self.frame.columns]).to_html(
            max_rows=40, float_format=lambda v: f"{v:.3g}")
        return f"<p><code>{self.__repr__()}</code></p>" + html

    def column(self, name: str) -> str:
        """The frame column an axis name means (``steps`` -> ``num_inference_steps``)."""
        name = ALIASES.get(name, name)
        if name not in self.frame.columns:
            raise KeyError(f"no column {name!r}; axes: {list(self.axes)}")
        return name

    # -- pictures ----------------------------------------------------------------------------

    def contact_sheet(self, x: str | None = None, y: str | None = None, z: str | None = None,
                      **options: Any) -> Sheet:
        """A grid of the outputs: ``x`` values across, ``y`` values down, before and mask shown
        once, failed cells blank with a mark; with ``z``, one such sheet per z value, stacked
        (``save("sweep.pdf")``: a page each). See :func:`fluxnb.sweeps.sheets.contact_sheet`.

        >>> sweep.contact_sheet(x="steps", y="strength").save("sheet.png")   # doctest: +SKIP
        """
        from .sheets import contact_sheet

        return contact_sheet(self, x=x, y=y, z=z, **options)

    def explore(self, *, width: int = 512, watch: bool | None = None) -> SweepExplorer:
        """A widget to flip through the cells (a slider or toggle per axis) with a swipe between
        input and output, or between two cells ("compare with"); it follows a sweep still
        running. See :class:`fluxnb.widgets.explorer.SweepExplorer`.

        >>> fluxnb.Sweep.load("runs/steps-x-strength").explore()              # doctest: +SKIP
        """
        from ..widgets.explorer import SweepExplorer

        return SweepExplorer(self, width=width, watch=watch)

    def plot(self, metric: str = "change_in_mask", x: str | None = None, hue: str | None = None,
             **options: Any) -> Sheet:
        """A metric against one parameter (``x``), one line per value of another (``hue``).

        >>> sweep.plot("psnr_outside", x="steps", hue="strength")           # doctest: +SKIP
        """
        from .sheets import metric_plot

        return metric_plot(self, metric=metric, x=x, hue=hue, **options)
