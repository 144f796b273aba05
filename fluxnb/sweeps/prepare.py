"""Everything before the first request: plan, run folder, resume state, cache hits -> :class:`Prepared`.

No network. The steps, in order: build the plan (validated and priced), write ``sweep.json`` and
the input images into the run folder, read the log (cells already done, jobs to re-attach to),
answer what the cache can (copied into the folder and logged as rows), and price what is left.
The row helpers at the end give every row of the log its shape; :mod:`.execute` uses them too.

>>> image_name_for(7, "0123456789abcdef", 0)
'00007-0123456789-0.png'
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ..datauri import sniff_mime
from .cache import ResultCache, cache_key, place
from .log import LogState, RunLog
from .options import SweepOptions
from .plan import Cell, Plan, Preflight, build_plan

__all__ = ["Prepared", "backend_id", "cell_row", "error_text", "image_name", "image_name_for",
           "new_attempt", "now", "prepare", "run_folder", "short_url", "suffix_for"]

_MIME_SUFFIX = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class _ClientSettings(Protocol):
    """What preparing needs of a client (either twin): where it sends jobs."""

    @property
    def base_url(self) -> Any: ...  # pragma: no cover

    @property
    def app(self) -> str: ...  # pragma: no cover


@dataclass
class Prepared:
    """A sweep ready to run: its plan and log, the cache, the cells left to send (``pending``),
    the jobs to re-attach to (cell key -> request id) and the pre-flight summary."""

    plan: Plan
    log: RunLog
    cache: ResultCache | None
    backend: str
    pending: list[Cell]
    reattach: dict[str, str]
    preflight: Preflight


# -- the steps -------------------------------------------------------------------------------------


def run_folder(folder: str | os.PathLike[str] | None) -> Path:
    """The run folder: ``folder`` (``~`` expanded), or a new temporary one when None."""
    if folder is None:
        return Path(tempfile.mkdtemp(prefix="fluxnb-sweep-"))
    return Path(folder).expanduser()


def backend_id(client: _ClientSettings) -> str:
    """The backend's identity for the cache and the log: URL (without any credentials) and app.

    >>> class C: base_url, app = "http://user:key@host:8000/q", "fal-ai/flux"
    >>> backend_id(C())
    'http://host:8000/q/fal-ai/flux'
    """
    parts = urllib.parse.urlsplit(str(client.base_url))
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) + f"/{client.app}"


def _write_run_folder(log: RunLog, plan: Plan, backend: str) -> None:
    """``sweep.json`` and every input image (by content hash), so the folder explains itself."""
    log.write_plan({**plan.describe(), "backend": backend, "written_at": now()})
    log.inputs.mkdir(exist_ok=True)
    log.images.mkdir(exist_ok=True)
    for cell in plan.cells:
        for image in cell.images.values():
            if image.data is not None:
                path = log.inputs / f"{image.digest.split(':')[1][:16]}.{suffix_for(image.data)}"
                if not path.exists():
                    path.write_bytes(image.data)


def _cache_rows(cache: ResultCache, cell: Cell, cached: list[dict[str, Any]],
                log: RunLog) -> list[dict[str, Any]]:
    """The cached outputs of ``cell`` placed in the run folder, as its rows."""
    attempt = new_attempt()
    rows = []
    for row in cached:
        target = log.images / image_name(cell, int(row.get("image_index", 0)), row.get("file"))
        place(cache.object_path(str(row["sha256"])), target)
        rows.append({**row, **cell_row(cell, attempt), "file": str(target), "cached": True,
                     "finished_at": now()})
    return rows


@dataclass
class _Split:
    pending: list[Cell]
    done: int
    cached: int


def _split_cells(plan: Plan, state: LogState, cache: ResultCache | None, backend: str,
                 log: RunLog) -> _Split:
    """Cells already done (skipped), answered by the cache (logged now, in one write) or pending.
    A cell with a job to re-attach to is not looked up: that job may still be running."""
    done, reattach = state.done, state.reattachable()
    split = _Split(pending=[], done=0, cached=0)
    hits: list[dict[str, Any]] = []
    for cell in plan.cells:
        if cell.key in done:
            split.done += 1
            continue
        cached = None
        if cache is not None and cell.key not in reattach:
            cached = cache.get(cache_key(cell.key, backend=backend))
        if cache is None or cached is None:
            split.pending.append(cell)
            continue
        split.cached += 1
        hits += _cache_rows(cache, cell, cached, log)
    log.append(hits)  # one write + fsync for every cache hit
    return split


def prepare(client: _ClientSettings, base_inputs: Mapping[str, Any], folder: Path,
            axes: Mapping[str, Any], options: SweepOptions, *, priced: bool = True) -> Prepared:
    """Plan the sweep, set up its run folder, read what a previous run left, apply the cache."""
    log = RunLog(folder)
    plan = build_plan(base_inputs, axes, seeds=options.seeds, sample=options.sample,
                      random_state=options.random_state,
                      price_per_megapixel=options.price_per_megapixel,
                      seconds_per_job=options.seconds_per_job)
    backend = backend_id(client)
    _write_run_folder(log, plan, backend)
    state = log.state()
    cache = options.result_cache()
    split = _split_cells(plan, state, cache, backend, log)
    preflight = plan.preflight(concurrency=options.concurrency, done=split.done,
                               cached=split.cached, pending=split.pending, priced=priced)
    pending_keys = {c.key for c in split.pending}
    reattach = {k: v for k, v in state.reattachable().items() if k in pending_keys}
    return Prepared(plan=plan, log=log, cache=cache, backend=backend, pending=split.pending,
                    reattach=reattach, preflight=preflight)


# -- the shape of a row ----------------------------------------------------------------------------


def now() -> str:
    """The time a row is written: UTC, ISO 8601, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_attempt() -> str:
    """A new attempt id: the rows of one outcome of a cell share it."""
    return uuid.uuid4().hex[:12]


def cell_row(cell: Cell, attempt: str) -> dict[str, Any]:
    """The columns every row of ``cell`` starts with."""
    return {"kind": "row", "cell": cell.index, **cell.params, **cell.columns(), "key": cell.key,
            "attempt": attempt}


def short_url(url: str) -> str:
    """URLs as logged: data URIs cut to their head (no megabytes of base64 in a frame).

    >>> short_url("data:image/png;base64," + "A" * 100)
    'data:image/png;base64,AAAAAAAAAAAAAAAAAA...(122 chars)'
    """
    if url.startswith("data:"):
        return f"{url[:40]}...({len(url)} chars)"
    return url


def error_text(exc: BaseException) -> str:
    """An error as a row shows it: type, message and a failed job's own error, at most 500 chars."""
    text = f"{type(exc).__name__}: {exc}"
    detail = getattr(exc, "error", None)  # a failed job's own error, as the server gave it
    if detail is not None and str(detail) not in text:
        text += f": {detail}"
    return text if len(text) <= 500 else text[:497] + "..."


def suffix_for(data: bytes) -> str:
    """The file suffix for image bytes (by their signature), ``bin`` when unknown."""
    return _MIME_SUFFIX.get(sniff_mime(data) or "", "bin")


def image_name_for(index: int, key: str, image_index: int, suffix: str = "png") -> str:
    """``{cell:05d}-{key[:10]}-{image}.{suffix}``: the name of an output in ``images/``."""
    return f"{index:05d}-{key[:10]}-{image_index}.{suffix or 'png'}"


def image_name(cell: Cell, index: int, original: Any = None) -> str:
    """The output's file name, keeping the suffix of ``original`` (a path or name) if any."""
    suffix = Path(str(original)).suffix.lstrip(".") if original else "png"
    return image_name_for(cell.index, cell.key, index, suffix)
