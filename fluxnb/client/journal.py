"""The run journal: a local SQLite file that remembers every recorded run, across kernels.

Where: ``$XDG_DATA_HOME/fluxnb/journal.sqlite3`` (default ``~/.local/share``), mode 0600, in WAL
mode with a busy timeout, so two kernels can write at once. One row per run: the time, where it
came from (``panel``, ``cli``, ``run``, ``rerun``), the backend (``fal.ai``, ``embedded`` or the
base URL's host), the app id, the request id, every parameter, the seed used, the status and
error, the output files when saved, and the image and mask by path (when known) and sha256.
Never a key or token, never image bytes.

What is recorded: the panel and ``fluxnb run`` record by default; a plain ``client.run`` only
when its client was made with ``journal=True`` (``fluxnb.connect(journal=True)``); sweeps only
with ``fluxnb.sweep(..., journal=True)`` or such a client (one row per cell that ran, origin
``sweep``: :mod:`fluxnb.sweeps.journal`). ``journal=False`` (on the client,
``fluxnb.connect`` or the panel) records nothing, and ``FLUXNB_JOURNAL=0`` turns the journal off
for the whole process (the CLI included).

A journal that cannot be written (locked, corrupt, unwritable) never breaks a run: a warning is
logged once and the run goes on.

>>> journal_path().name
'journal.sqlite3'
>>> rows = read_rows(prompt="fox")          # what fluxnb.journal() shows   # doctest: +SKIP
>>> with recording(enabled=True, origin="panel"):                         # doctest: +SKIP
...     client.run(prompt="a fox", image_url="in.png", mask_url="mask.png")
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ..params_meta import run_inputs, safe_url

__all__ = ["JOURNAL_ENV", "RunEntry", "begin_run", "file_sha256", "journal_enabled", "journal_path",
           "note_outputs", "read_rows", "recording", "write_row"]

log = logging.getLogger("fluxnb.journal")

#: ``FLUXNB_JOURNAL=0`` (or false/no/off) turns the journal off for the whole process.
JOURNAL_ENV = "FLUXNB_JOURNAL"
#: Seconds a write waits for another writer (another kernel) before giving up with a warning.
BUSY_TIMEOUT = 5.0
_IMAGE_FIELDS = ("image_url", "mask_url")
_COLUMNS = ("time", "origin", "backend", "app", "request_id", "status", "seconds", "prompt",
            "seed", "params", "image", "image_sha256", "mask", "mask_sha256", "outputs", "error")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL, origin TEXT, backend TEXT, app TEXT, request_id TEXT, status TEXT,
    seconds REAL, prompt TEXT, seed INTEGER, params TEXT, image TEXT, image_sha256 TEXT,
    mask TEXT, mask_sha256 TEXT, outputs TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS runs_request ON runs (request_id);
"""
_warned: set[str] = set()
_lock = threading.Lock()
_open: tuple[str, sqlite3.Connection] | None = None


@dataclass(frozen=True)
class _Context:
    enabled: bool | None
    origin: str
    sources: Mapping[str, Any]


_CONTEXT: contextvars.ContextVar[_Context | None] = contextvars.ContextVar("fluxnb_journal",
                                                                           default=None)


def journal_path() -> Path:
    """``$XDG_DATA_HOME/fluxnb/journal.sqlite3`` (``~/.local/share`` when the variable is unset)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "fluxnb" / "journal.sqlite3"


def journal_enabled() -> bool:
    """False when ``FLUXNB_JOURNAL`` is 0/false/no/off."""
    return os.environ.get(JOURNAL_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@contextlib.contextmanager
def recording(*, enabled: bool | None = None, origin: str = "run",
              image: Any = None, mask: Any = None) -> Iterator[None]:
    """Inside, ``client.run`` records (``enabled=True``), does not (False) or follows its
    client's ``journal`` (None), as ``origin``; ``image``/``mask`` name where the inputs came
    from when the client is given decoded images (a path the panel or CLI knows)."""
    token = _CONTEXT.set(_Context(enabled, origin, {"image_url": image, "mask_url": mask}))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def _warn_once(path: Path, exc: BaseException) -> None:
    key = str(path)
    if key not in _warned:
        _warned.add(key)
        log.warning("fluxnb: the run journal %s cannot be written (%s: %s); runs go on without "
                    "it. Fix or delete the file, or set FLUXNB_JOURNAL=0.", path,
                    type(exc).__name__, exc)


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints, no fsync per row
        db.executescript(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


@contextlib.contextmanager
def _writer(path: Path) -> Iterator[sqlite3.Connection]:
    """This process's connection to ``path``, kept open between writes (closing the last one
    checkpoints the WAL: ~20 ms a row), one writer thread at a time; dropped after an error."""
    global _open
    with _lock:
        if _open is not None and (_open[0] != str(path) or not path.exists()):  # moved, deleted
            _open[1].close()
            _open = None
        if _open is None:
            _open = (str(path), _connect(path))
        try:
            yield _open[1]
        except BaseException:
            _open[1].close()
            _open = None
            raise


def write_row(row: Mapping[str, Any]) -> int | None:
    """Append one run; its row id, or None (journal off, or not writable: warned once)."""
    if not journal_enabled():
        return None
    path = journal_path()
    values = [_cell(row.get(name)) for name in _COLUMNS]
    try:
        with _writer(path) as db, db:
            cursor = db.execute(f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES "
                                f"({', '.join('?' * len(_COLUMNS))})", values)
        return cursor.lastrowid
    except Exception as exc:  # never break a run over its journal
        _warn_once(path, exc)
        return None


def note_outputs(request_id: str | None, paths: Sequence[Any]) -> None:
    """Add saved output files to the latest row of ``request_id`` (absolute paths)."""
    if not request_id or not journal_enabled():
        return
    path = journal_path()
    if not path.exists():
        return
    files = [str(Path(p).resolve()) for p in paths]
    try:
        with _writer(path) as db, db:
            found = db.execute("SELECT id, outputs FROM runs WHERE request_id = ? "
                               "ORDER BY id DESC LIMIT 1", (request_id,)).fetchone()
            if found is not None:
                before = json.loads(found[1]) if found[1] else []
                db.execute("UPDATE runs SET outputs = ? WHERE id = ?",
                           (json.dumps([*before, *files]), found[0]))
    except Exception as exc:
        _warn_once(path, exc)


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return value


def _since_text(since: datetime | date | str) -> str:
    if isinstance(since, str):
        since = datetime.fromisoformat(since)
    if not isinstance(since, datetime):
        since = datetime(since.year, since.month, since.day)
    if since.tzinfo is None:
        since = since.astimezone()  # a naive time is local time
    return since.astimezone(UTC).isoformat(timespec="microseconds")


def read_rows(*, prompt: str | None = None, since: datetime | date | str | None = None,
              backend: str | None = None, origin: str | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
    """The recorded runs, oldest first: ``prompt`` a case-insensitive substring, ``since`` a
    datetime/date/ISO string (naive = local time), ``backend`` exact (``fal.ai``, ``embedded``,
    ``host:port``), ``limit`` the newest N. A missing or unreadable journal reads as empty."""
    if since is not None and not isinstance(since, (datetime, date, str)):
        raise TypeError(f"since={since!r} must be a datetime, a date or an ISO date string")
    where, args = [], []
    if prompt:
        where.append("instr(lower(prompt), lower(?)) > 0")
        args.append(str(prompt))
    if since is not None:
        where.append("time >= ?")
        args.append(_since_text(since))
    for column, value in (("backend", backend), ("origin", origin)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(str(value))
    sql = f"SELECT id, {', '.join(_COLUMNS)} FROM runs"
    sql += (" WHERE " + " AND ".join(where)) if where else ""
    sql += " ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit is not None else "")
    path = journal_path()
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
        try:
            found = db.execute(sql, args).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        _warn_once(path, exc)
        return []
    rows = []
    for values in reversed(found):
        row = dict(zip(("id", *_COLUMNS), values, strict=True))
        for name in ("params", "outputs"):
            row[name] = json.loads(row[name]) if row[name] else ({} if name == "params" else [])
        rows.append(row)
    return rows


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes (read in chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source_of(value: Any) -> tuple[str | None, str | None]:
    """(path or URL, sha256) of an input given by path or http(s) URL; (None, None) otherwise."""
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return safe_url(value), None
    if isinstance(value, (str, os.PathLike)) and not str(value).startswith("data:"):
        path = Path(value).expanduser()
        with contextlib.suppress(OSError, ValueError):
            if path.is_file():
                return str(path.resolve()), file_sha256(path)
    return None, None


@dataclass
class RunEntry:
    """One run being recorded: made by :func:`begin_run` before the submit, written by
    :meth:`finish` after it ended (however it ended)."""

    origin: str
    backend: str
    app: str
    fields: dict[str, Any]
    inputs: dict[str, tuple[str | None, str | None]]
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    t0: float = field(default_factory=time.monotonic)

    def finish(self, *, job: Any = None, result: Any = None, error: BaseException | None = None
               ) -> None:
        """Write the row: ``result`` on success, ``error`` otherwise; never raises."""
        try:
            write_row(self._row(job, result, error))
        except Exception as exc:  # e.g. an odd parameter value: the run still goes on
            _warn_once(journal_path(), exc)

    def _row(self, job: Any, result: Any, error: BaseException | None) -> dict[str, Any]:
        record = getattr(job, "record", None) or {}
        params = dict(record.get("params") or run_inputs(self.fields))
        seed = getattr(result, "seed", None) if result is not None else None
        if seed is not None:
            params["seed"] = seed
        sent = record.get("inputs") or {}
        row: dict[str, Any] = {
            "time": self.started.isoformat(timespec="microseconds"), "origin": self.origin,
            "backend": self.backend, "app": self.app,
            "request_id": getattr(result, "request_id", None) or getattr(job, "request_id", None),
            "status": "completed" if error is None else _status_of(error),
            "seconds": round(time.monotonic() - self.t0, 3), "prompt": params.get("prompt"),
            "seed": params.get("seed"), "params": params, "outputs": [],
            "error": None if error is None else f"{type(error).__name__}: {error}"[:2000]}
        for name, column in (("image_url", "image"), ("mask_url", "mask")):
            where, digest = self.inputs.get(name, (None, None))
            if where is None and "url" in (sent.get(name) or {}):
                where = sent[name]["url"]
            row[column] = where
            row[f"{column}_sha256"] = digest or (sent.get(name) or {}).get("sha256")
        return row


def _status_of(error: BaseException) -> str:
    name = type(error).__name__
    if "Cancel" in name or isinstance(error, KeyboardInterrupt):
        return "cancelled"
    return "timeout" if "Timeout" in name else "failed"


def begin_run(client: Any, inputs: Mapping[str, Any] | None, fields: Mapping[str, Any]
              ) -> RunEntry | None:
    """The entry for a ``client.run`` about to submit, or None when it is not recorded (see
    the module docstring); never raises."""
    try:
        context = _CONTEXT.get()
        setting = getattr(client, "journal", None)
        enabled = context.enabled if context is not None and context.enabled is not None \
            else setting is True
        if not enabled or not journal_enabled():
            return None
        merged = {**(inputs if isinstance(inputs, Mapping) else {}), **fields}
        sources = context.sources if context is not None else {}
        named = {}
        for name in _IMAGE_FIELDS:
            value = sources.get(name) if sources.get(name) is not None else merged.get(name)
            named[name] = _source_of(value)
        from ._record import backend_name

        backend = getattr(client, "journal_backend", None) or backend_name(
            client.base_url, is_fal=client.is_fal)
        return RunEntry(context.origin if context is not None else "run", backend, client.app,
                        {k: v for k, v in merged.items() if k not in _IMAGE_FIELDS}, named)
    except Exception as exc:
        _warn_once(journal_path(), exc)
        return None
