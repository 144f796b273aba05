"""The panel's run history: one record per run (parameters, request id, status, seconds, seed).

Records hold only what was sent as parameters (never image data, never a key).

>>> h = RunHistory(maxlen=2)
>>> r = h.start({"prompt": "a fox", "num_inference_steps": 8})
>>> h.finish(r, "completed", seed=7, request_id="abc")
>>> h.records[0].status, h.records[0].seed, h.to_rows()[0]["steps"]
('completed', 7, 8)
"""

from __future__ import annotations

import html
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..schema import short_name

__all__ = ["RunHistory", "RunRecord"]

# parameter -> column name in the history table: the schema's short names (``steps``, ...)
_COLUMNS = {name: short_name(name) for name in (
    "num_inference_steps", "guidance_scale", "strength", "num_images", "seed", "output_format",
    "enable_safety_checker", "prompt")}


@dataclass
class RunRecord:
    """One run of the panel. ``status``: submitting, queued, running, completed, failed, cancelled."""

    params: dict[str, Any]
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    request_id: str | None = None
    status: str = "submitting"
    seconds: float | None = None
    seed: int | None = None
    error: str | None = None
    #: Where the image and mask came from (a path or URL), when known: what "load" re-applies.
    image: str | None = None
    mask: str | None = None
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def to_row(self) -> dict[str, Any]:
        """A flat dict: time, status, request id, seconds, seed, the parameters, LoRAs, error."""
        row: dict[str, Any] = {"started": self.started.isoformat(timespec="seconds"),
                               "status": self.status, "request_id": self.request_id,
                               "seconds": None if self.seconds is None else round(self.seconds, 2)}
        for name, column in _COLUMNS.items():
            row[column] = self.params.get(name)
        if self.seed is not None:
            row["seed"] = self.seed
        loras = self.params.get("loras") or []
        row["loras"] = ", ".join(f"{lora.get('path')}×{lora.get('scale', 1.0)}" for lora in loras
                                 if isinstance(lora, Mapping))
        row["error"] = self.error
        return row


def _from_journal(row: Mapping[str, Any]) -> RunRecord:
    """A history record from a run journal row (:func:`fluxnb.client.journal.read_rows`)."""
    started = datetime.fromisoformat(str(row["time"]))
    return RunRecord(dict(row.get("params") or {}), started=started,
                     request_id=row.get("request_id"), status=str(row.get("status") or ""),
                     seconds=row.get("seconds"), seed=row.get("seed"), error=row.get("error"),
                     image=row.get("image"), mask=row.get("mask"))


class RunHistory:
    """The last ``maxlen`` runs, oldest first; :meth:`to_frame` gives a pandas DataFrame."""

    def __init__(self, maxlen: int = 20):
        if maxlen < 1:
            raise ValueError(f"maxlen={maxlen} must be >= 1")
        self._records: deque[RunRecord] = deque(maxlen=maxlen)

    @property
    def maxlen(self) -> int:
        return self._records.maxlen or 0

    @property
    def records(self) -> list[RunRecord]:
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def start(self, params: Mapping[str, Any]) -> RunRecord:
        """Add a record for a run that is starting (parameters without images)."""
        record = RunRecord({k: v for k, v in params.items() if k not in ("image_url", "mask_url")})
        self._records.append(record)
        return record

    def preload(self, rows: list[dict[str, Any]]) -> int:
        """Put earlier runs first (rows of the run journal, oldest first: what a restarted
        kernel shows); returns how many were added (the newest ``maxlen`` at most)."""
        maxlen = self.maxlen
        earlier = [_from_journal(row) for row in rows[-maxlen:]]
        room = maxlen - len(self._records)
        earlier = earlier[len(earlier) - room:] if room > 0 else []
        self._records.extendleft(reversed(earlier))
        return len(earlier)

    def finish(self, record: RunRecord, status: str, *, seed: int | None = None,
               error: str | None = None, request_id: str | None = None) -> None:
        """Close a record: its final status, the seconds it took, the seed and any error."""
        record.status = status
        record.seconds = time.monotonic() - record._t0
        if seed is not None:
            record.seed = seed
        if error is not None:
            record.error = error
        if request_id is not None:
            record.request_id = request_id

    def to_rows(self) -> list[dict[str, Any]]:
        return [r.to_row() for r in self._records]

    def to_frame(self) -> Any:
        """The runs as a pandas DataFrame, one row per run (oldest first)."""
        import pandas as pd

        rows = self.to_rows()
        columns = ["started", "status", "request_id", "seconds", *_COLUMNS.values(), "loras", "error"]
        return pd.DataFrame(rows, columns=list(dict.fromkeys(columns)))

    def to_html(self, last: int = 5) -> str:
        """A small HTML table of the last runs, newest first (what the panel shows)."""
        rows = self.to_rows()[-last:][::-1]
        if not rows:
            return ""
        cols = ["status", "seconds", *(_COLUMNS[k] for k in (
            "num_inference_steps", "guidance_scale", "strength", "seed")), "request_id"]
        head = "".join(f"<th style='padding:0 6px'>{c}</th>" for c in cols)
        body = ""
        for row in rows:
            cells = []
            for c in cols:
                value = row.get(c)
                text = "" if value is None else str(value)
                if c == "request_id" and text:
                    text = text[:8]
                cells.append(f"<td style='padding:0 6px'>{html.escape(text)}</td>")
            body += "<tr>" + "".join(cells) + "</tr>"
        return (f"<details open><summary>history ({len(self)} runs; <code>panel.history</code> is a "
                f"DataFrame)</summary><table style='font-size:85%'><tr>{head}</tr>{body}</table></details>")
