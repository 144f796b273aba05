"""``fluxnb.journal()``: the runs recorded in the local run journal as a DataFrame, and
``.rerun(i)`` to run one again with the same parameters and inputs.

What is recorded, where and when: :mod:`fluxnb.client.journal`.

>>> runs = fluxnb.journal(prompt="fox", since="2026-12-01")          # doctest: +SKIP
>>> runs[["time", "backend", "status", "prompt", "seed"]]             # doctest: +SKIP
>>> result = runs.rerun(-1)          # the last one again, on fluxnb.connect()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from .client import InpaintResult
from .client.journal import file_sha256, read_rows, recording
from .errors import FluxnbError
from .schema import resolve_aliases

__all__ = ["JournalFrame", "RerunError", "journal", "rerun_inputs"]

_COLUMNS = ["time", "origin", "backend", "app", "request_id", "status", "seconds", "prompt",
            "seed", "params", "image", "image_sha256", "mask", "mask_sha256", "outputs", "error"]


class RerunError(FluxnbError, ValueError):
    """A past run cannot be run again as recorded: an input is gone or has changed."""


def rerun_inputs(row: Mapping[str, Any], *, image: Any = None, mask: Any = None
                 ) -> dict[str, Any]:
    """The ``client.run`` inputs of a journal row: its parameters, and the image and mask from
    their recorded path (checked against the recorded sha256) or URL, unless ``image``/``mask``
    are given. Raises RerunError."""
    params = dict(row.get("params") or {})
    given = {"image": image, "mask": mask}
    for column, name in (("image", "image_url"), ("mask", "mask_url")):
        if given[column] is not None:
            params[name] = given[column]
            continue
        where, digest = row.get(column), row.get(f"{column}_sha256")
        if not isinstance(where, str) or not where:
            raise RerunError(
                f"the run's {column} was given in memory, not by path, so it cannot be found "
                f"again: pass it, rerun(i, {column}=...)")
        if not where.startswith(("http://", "https://")):
            path = Path(where)
            if not path.is_file():
                raise RerunError(f"the run's {column} {where} is gone (no such file): put it "
                                 f"back, or pass another one: rerun(i, {column}=...)")
            if digest and file_sha256(path) != digest:
                raise RerunError(
                    f"the run's {column} {where} has changed since the run (sha256 "
                    f"{digest[:12]}... expected): pass it explicitly to run with the new "
                    f"file, rerun(i, {column}={where!r})")
        params[name] = where
    return params


class JournalFrame(pd.DataFrame):  # type: ignore[misc]  # pandas ships no stubs here
    """A DataFrame of recorded runs (oldest first) with :meth:`rerun`."""

    @property
    def _constructor(self) -> type[JournalFrame]:
        return JournalFrame

    def rerun(self, i: int = -1, client: Any = None, *, image: Any = None, mask: Any = None,
              **changes: Any) -> InpaintResult:
        """Run row ``i`` (a position, as ``iloc``: -1 is the last) again: the same parameters,
        seed included, and the image and mask read again from their paths (a RerunError when a
        file is gone or its sha256 changed; ``image=``/``mask=`` replace them). ``client``:
        default ``fluxnb.connect()``. ``changes`` override parameters (``steps=8``). The rerun
        is recorded (origin ``rerun``) unless the client has ``journal=False``.

        >>> fluxnb.journal().rerun(-1, steps=8)                       # doctest: +SKIP
        """
        if not -len(self) <= i < len(self):
            raise IndexError(f"rerun(i={i}): the journal has {len(self)} runs here "
                             f"(use 0..{len(self) - 1} or negative positions)")
        inputs = {**rerun_inputs(self.iloc[i].to_dict(), image=image, mask=mask),
                  **resolve_aliases(changes)}
        own = client is None
        if own:
            from .connect import connect

            client = connect(quiet=True)
        enabled = None if getattr(client, "journal", None) is False else True
        try:
            with recording(enabled=enabled, origin="rerun"):
                result: InpaintResult = client.run(inputs)
            return result
        finally:
            if own:
                client.close()


def journal(prompt: str | None = None, since: datetime | date | str | None = None,
            backend: str | None = None) -> JournalFrame:
    """The recorded runs, oldest first, as a :class:`JournalFrame` (a DataFrame with
    ``.rerun(i)``): ``prompt`` a case-insensitive substring of the prompt, ``since`` a
    datetime, date or ISO string (naive times are local), ``backend`` ``fal.ai``, ``embedded``
    or a server's ``host:port``. Columns: time, origin, backend, app, request_id, status,
    seconds, prompt, seed, params (a dict), image, image_sha256, mask, mask_sha256, outputs,
    error.

    >>> fluxnb.journal(prompt="fox", backend="fal.ai")               # doctest: +SKIP
    """
    rows = read_rows(prompt=prompt, since=since, backend=backend)
    frame = JournalFrame(rows, columns=["id", *_COLUMNS])
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    indexed: JournalFrame = frame.set_index("id")
    return indexed
