"""Recording a sweep's cells in the local run journal (:mod:`fluxnb.client.journal`).

``fluxnb.sweep(..., journal=True)`` writes one journal row per cell that ran (origin
``sweep``): its parameters, the seed used, the status and error, the request id, the backend,
the output files in the run folder, and the image and mask as the run folder's copies (by path
and sha256), so ``fluxnb.journal().rerun(i)`` runs the cell again. ``journal=None`` (default)
follows the client (``fluxnb.connect(journal=True)`` records), ``journal=False`` never records.
Cells answered by the sweep cache sent no request and are not recorded. Never a key; a journal
that cannot be written never breaks the sweep (warned once).

>>> SweepJournal.wanted(None, client=None), SweepJournal.wanted(True, client=None)
(False, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..client.journal import RunEntry, begin_run, journal_enabled, note_outputs, recording
from ..params_meta import safe_url
from .plan import Cell
from .prepare import suffix_for

__all__ = ["SweepJournal"]

_IMAGE_FIELDS = ("image_url", "mask_url")


class SweepJournal:
    """Makes and writes the journal entries of one sweep's cells (for :class:`SweepRun`)."""

    def __init__(self, client: Any, inputs_folder: Path):
        # the caller's client, not the sweep's async clone: it carries the backend's name
        # (``embedded``) and the app
        self._client, self._inputs = client, inputs_folder

    @staticmethod
    def wanted(option: bool | None, client: Any) -> bool:
        """True when the sweep records: ``journal=True``, or None and the client's ``journal``
        is True; never when ``FLUXNB_JOURNAL=0``."""
        on = option if option is not None else getattr(client, "journal", None) is True
        return bool(on) and journal_enabled()

    def begin(self, cell: Cell) -> RunEntry | None:
        """The entry of ``cell`` about to be sent (None when it cannot be made); never raises."""
        fields = {k: v for k, v in cell.inputs.items() if k not in _IMAGE_FIELDS}
        with recording(enabled=True, origin="sweep"):
            entry = begin_run(self._client, None, fields)
        if entry is not None:
            with contextlib.suppress(Exception):
                for name in _IMAGE_FIELDS:
                    entry.inputs[name] = self._source(cell, name)
        return entry

    def _source(self, cell: Cell, name: str) -> tuple[str | None, str | None]:
        image = cell.images.get(name)
        if image is None:
            return None, None
        if image.data is None:  # an http(s) URL, sent as is
            return safe_url(image.uri), None
        hexdigest = image.digest.split(":", 1)[1]
        # the copy the run folder keeps of every input (prepare._write_run_folder)
        path = self._inputs / f"{hexdigest[:16]}.{suffix_for(image.data)}"
        return str(path.resolve()), hexdigest

    @staticmethod
    def finish(entry: RunEntry | None, *, job: Any = None, result: Any = None,
               error: BaseException | None = None, outputs: Sequence[Any] = ()) -> None:
        """Write the cell's row (and its output files); never raises."""
        if entry is None:
            return
        with contextlib.suppress(Exception):
            entry.finish(job=job, result=result, error=error)
            request_id = getattr(result, "request_id", None) or getattr(job, "request_id", None)
            if outputs:
                note_outputs(request_id, list(outputs))
