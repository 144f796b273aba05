"""The server's durable state (``fluxnb serve --state-dir DIR``): jobs, per-person usage and the
result index in one SQLite file (the standard library's ``sqlite3``, WAL mode), so that a queue
survives a restart, even a ``kill -9``.

Writes never block the service: :meth:`Journal.save` and :meth:`Journal.forget` only note what
changed (cheap, under the service's lock); one writer thread puts the newest state of every
noted job into the database in a single transaction, a few milliseconds later. A crash loses at
most those last milliseconds, unless the caller waits: :meth:`Journal.flush` waits for the
writer, and :meth:`Journal.sync` for the changes noted so far only (the submit route uses it, so
a job whose id the client holds is on disk).

>>> import tempfile
>>> from fluxnb.server.record import JobRecord
>>> journal = Journal(Path(tempfile.mkdtemp()))
>>> journal.open()
>>> journal.save(JobRecord(id="r1", app="fal-ai/flux-lora", params={"prompt": "p"}, owner="ada"))
>>> journal.flush()
>>> [(job.id, job.owner, job.state) for job in journal.load_jobs()]
[('r1', 'ada', 'IN_QUEUE')]
>>> journal.save_usage({"ada": {"megapixels": 1.5, "usd": 0.0}}); journal.load_usage()
{'ada': {'megapixels': 1.5, 'usd': 0.0}}
>>> journal.close()
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..protocol import COMPLETED, LogEntry
from .record import JobRecord

__all__ = ["JOURNAL_FILE", "MAX_LOG_LINES", "Journal", "KeptResult", "private_dir"]

logger = logging.getLogger("fluxnb.server")

#: The database's name inside the state dir.
JOURNAL_FILE = "state.sqlite3"
#: Log lines kept per job in the journal (the last ones).
MAX_LOG_LINES = 50

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, app TEXT NOT NULL, owner TEXT, params TEXT NOT NULL,
    image BLOB, mask BLOB, priority INTEGER NOT NULL, seq INTEGER NOT NULL, state TEXT NOT NULL,
    submitted REAL NOT NULL, start_timeout REAL, started REAL, inference_time REAL,
    result TEXT, files_token TEXT, error TEXT, error_type TEXT, error_status INTEGER,
    error_body TEXT, error_headers TEXT, cost_usd REAL, logs TEXT NOT NULL,
    restarts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS usage (owner TEXT PRIMARY KEY, megapixels REAL NOT NULL,
    usd REAL NOT NULL);
CREATE TABLE IF NOT EXISTS results (job_id TEXT PRIMARY KEY, token TEXT, files TEXT NOT NULL,
    bytes INTEGER NOT NULL, kept REAL NOT NULL);
"""
_COLUMNS = ("id", "app", "owner", "params", "image", "mask", "priority", "seq", "state",
            "submitted", "start_timeout", "started", "inference_time", "result", "files_token",
            "error", "error_type", "error_status", "error_body", "error_headers", "cost_usd",
            "logs", "restarts")
# the inputs are written once (a finished job drops them); every other column is the newest
_UPSERT = (f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
           "ON CONFLICT(id) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in ("id", "image", "mask"))
           + f", image = CASE WHEN excluded.state = '{COMPLETED}' THEN NULL ELSE image END"
           + f", mask = CASE WHEN excluded.state = '{COMPLETED}' THEN NULL ELSE mask END")

#: One kept result in the index: (job id, files token, {file name: content type}, bytes, kept at).
KeptResult = tuple[str, str | None, dict[str, str], int, float]


class Journal:
    """Jobs, usage and the result index of one server in ``directory/state.sqlite3``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / JOURNAL_FILE
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()  # one connection, one user at a time
        self._changed = threading.Condition()
        self._pending: dict[tuple[str, str], Any] = {}  # (kind, key) -> what to write
        self._busy = False
        self._noted = 0  # changes noted so far, and how many of them are written (sync())
        self._written = 0
        self._closing = False
        self._writer: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Create (or reopen) the database and start the writer thread. The folder is made
        private (0700) and the database 0600: it holds every person's prompts and inputs."""
        private_dir(self.directory)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite's -wal, -shm too
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                             timeout=10.0)
        db.execute("PRAGMA journal_mode=WAL")
        for suffix in ("", "-wal", "-shm"):  # files an older fluxnb made world-readable
            path = self.path.with_name(self.path.name + suffix)
            if path.exists():
                path.chmod(0o600)
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db
        self._closing = False
        self._writer = threading.Thread(target=self._write_loop, name="fluxnb-journal",
                                        daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Write what is pending, stop the writer and close the database."""
        if self._db is None:
            return
        self.flush()
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._writer is not None:
            self._writer.join(10.0)
        with self._db_lock:
            db, self._db = self._db, None
        if db is not None:
            db.close()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait (at most ``timeout`` s) until every noted change is in the database."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (self._pending or self._busy) and self._writer is not None \
                    and self._writer.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait (at most ``timeout`` s) until every change noted before this call is written
        (later ones need not be: a busy server never starves the caller); whether they are. A
        write that fails (a full disk) is logged by the writer and counts as done.

        >>> # journal.save(job); journal.sync()  # job's row is on disk, even after a kill -9
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            target = self._noted
            while self._written < target and self._writer is not None \
                    and self._writer.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._written >= target

    # -- noting changes (cheap; callable with the service's lock held) -------------------------

    def save(self, job: JobRecord) -> None:
        """Note that ``job`` changed; the writer stores its newest state."""
        self._note(("job", job.id), job)

    def forget(self, job_ids: list[str]) -> None:
        """Note that these jobs are gone (evicted): their rows and result entries go."""
        for job_id in job_ids:
            self._note(("job", job_id), None)
            self._note(("result", job_id), None)

    def keep_result(self, kept: KeptResult) -> None:
        """Note one kept result (the durable result store's index)."""
        self._note(("result", kept[0]), kept)

    def save_usage(self, snapshot: dict[str, dict[str, float]]) -> None:
        """Store per-person usage, ``{owner: {"megapixels": float, "usd": float}}`` (replaces
        what was stored)."""
        self._note(("usage", ""), {k: dict(v) for k, v in snapshot.items()})

    def _note(self, key: tuple[str, str], value: Any) -> None:
        with self._changed:
            self._pending.pop(key, None)  # re-insert: the newest change is written last
            self._pending[key] = value
            self._noted += 1
            self._changed.notify_all()

    # -- reading (at start) --------------------------------------------------------------------

    def load_jobs(self) -> list[JobRecord]:
        """Every stored job, in submission order (``seq``)."""
        rows = self._query(f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY seq, rowid")
        return [_job_from_row(dict(zip(_COLUMNS, row, strict=True))) for row in rows]

    def load_usage(self) -> dict[str, dict[str, float]]:
        """The usage :meth:`save_usage` stored; ``{}`` when none."""
        rows = self._query("SELECT owner, megapixels, usd FROM usage ORDER BY owner")
        return {owner: {"megapixels": float(mp), "usd": float(usd)} for owner, mp, usd in rows}

    def load_results(self) -> list[KeptResult]:
        """The result index, oldest first."""
        rows = self._query("SELECT job_id, token, files, bytes, kept FROM results ORDER BY kept")
        return [(j, t, json.loads(f), int(b), float(k)) for j, t, f, b, k in rows]

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        self.flush()
        with self._db_lock:
            if self._db is None:
                raise RuntimeError("the journal is not open")
            return list(self._db.execute(sql))

    # -- the writer thread -----------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closing:
                    self._changed.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, {}
                self._busy = True
                noted = self._noted  # the batch holds every change noted up to here
            try:
                self._write(batch)
            except Exception:  # noqa: BLE001 - the writer must outlive a full disk or a bug
                logger.exception("the state journal could not write %d changes", len(batch))
            finally:
                with self._changed:
                    self._busy = False
                    self._written = noted
                    self._changed.notify_all()

    def _write(self, batch: dict[tuple[str, str], Any]) -> None:
        with self._db_lock:
            db = self._db
            if db is None:
                return
            db.execute("BEGIN")
            try:
                for (kind, key), value in batch.items():
                    _apply(db, kind, key, value)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise


def private_dir(directory: Path) -> None:
    """Create ``directory`` (and its parents) if needed and make it 0700: only the server's
    user may list or read what is in it."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:  # mkdir's mode skips a folder that exists and is masked by umask
        directory.chmod(0o700)
    except OSError as exc:  # not ours (a shared --state-dir): say so, keep serving
        logger.warning("could not make the state folder %s private (chmod 700): %s; other "
                       "users may read the prompts and images in it", directory, exc)


def _apply(db: sqlite3.Connection, kind: str, key: str, value: Any) -> None:
    if kind == "job":
        if value is None:
            db.execute("DELETE FROM jobs WHERE id = ?", (key,))
        else:
            db.execute(_UPSERT, _job_row(value))
    elif kind == "result":
        if value is None:
            db.execute("DELETE FROM results WHERE job_id = ?", (key,))
        else:
            job_id, token, files, size, kept = value
            db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
                       (job_id, token, json.dumps(files), size, kept))
    elif kind == "usage":
        db.execute("DELETE FROM usage")
        db.executemany("INSERT INTO usage VALUES (?, ?, ?)",
                       [(owner, float(row.get("megapixels", 0.0)), float(row.get("usd", 0.0)))
                        for owner, row in value.items()])


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def _job_row(job: JobRecord) -> tuple[Any, ...]:
    """The job's newest state as a row (wall-clock times: monotonic ones end with the process)."""
    wall = time.time() - time.monotonic()
    logs = [e.to_json() for e in job.logs[-MAX_LOG_LINES:]]
    start_timeout = None if job.deadline is None else job.deadline - job.submitted_at
    return (job.id, job.app, job.owner, json.dumps(job.params, default=str), job.image_data,
            job.mask_data, job.priority, job.seq, job.state, job.submitted_at + wall, start_timeout,
            None if job.started_at is None else job.started_at + wall, job.inference_time,
            _dumps(job.result), job.files_token, job.error, job.error_type, job.error_status,
            _dumps(job.error_body), json.dumps(job.error_headers), job.cost_usd,
            json.dumps(logs), job.restarts)


def _job_from_row(row: dict[str, Any]) -> JobRecord:
    mono = time.monotonic() - time.time()
    job = JobRecord(id=row["id"], app=row["app"], params=json.loads(row["params"]),
                    owner=row["owner"], priority=int(row["priority"]), seq=int(row["seq"]),
                    image_data=row["image"], mask_data=row["mask"], state=row["state"],
                    submitted_at=float(row["submitted"]) + mono)
    if row["start_timeout"] is not None:
        job.deadline = job.submitted_at + float(row["start_timeout"])
    if row["started"] is not None:
        job.started_at = float(row["started"]) + mono
    job.inference_time = row["inference_time"]
    job.result = None if row["result"] is None else json.loads(row["result"])
    job.files_token = row["files_token"]
    job.error, job.error_type, job.error_status = row["error"], row["error_type"], row["error_status"]
    job.error_body = None if row["error_body"] is None else json.loads(row["error_body"])
    job.error_headers = json.loads(row["error_headers"] or "{}")
    job.cost_usd = row["cost_usd"]
    job.logs = [LogEntry.from_json(e) for e in json.loads(row["logs"])]
    job.restarts = int(row["restarts"])
    return job
