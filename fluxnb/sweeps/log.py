"""The run folder: ``sweep.json`` (the plan), ``rows.jsonl`` (append-only, fsync'd after every
job) and ``images/``. A crash loses at most the job being written; reading tolerates a torn last
line.

Records are JSON lines: ``{"kind": "submitted", "key", "cell", "request_id"}`` right after a job
is queued (so a resumed sweep re-attaches to it instead of submitting it again), and
``{"kind": "row", ...}`` for each output image (or one row for a failed cell). The rows of one
outcome share an ``attempt`` id; the latest attempt of a cell wins.

>>> import tempfile
>>> log = RunLog(tempfile.mkdtemp())
>>> log.append([{"kind": "row", "key": "k1", "attempt": "a", "status": "ok"}])
>>> log.state().done
{'k1'}
>>> log.close()
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["LogState", "RunLog"]

PLAN_FILE = "sweep.json"
ROWS_FILE = "rows.jsonl"
IMAGES_DIR = "images"
INPUTS_DIR = "inputs"


@dataclass
class LogState:
    """What the log says: the latest rows of each cell key, the keys that are done, and jobs
    that were queued but have no outcome yet (key -> request id)."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    submitted: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> set[str]:
        return {k for k, rows in self.rows.items() if rows and rows[0].get("status") == "ok"}

    def reattachable(self) -> dict[str, str]:
        """Keys whose job may still exist on the server: queued with no outcome, or lost while
        waiting (a transport failure after the submit)."""
        out = dict(self.submitted)
        for key, rows in self.rows.items():
            if key in out or not rows:
                continue
            row = rows[0]
            if row.get("status") == "error" and row.get("phase") == "wait" and row.get("request_id"):
                out[key] = str(row["request_id"])
        return out


class RunLog:
    """An append-only JSONL log in ``folder`` (created if needed)."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / ROWS_FILE
        self._lock = threading.Lock()
        self._handle: IO[str] | None = None
        self._repair()

    def _repair(self) -> None:
        """After a crash the last line may be torn: end it so the next record starts clean."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell() == 0:
                    return
                handle.seek(-1, os.SEEK_END)
                last = handle.read(1)
        except FileNotFoundError:
            return
        if last != b"\n":
            with open(self.path, "ab") as handle:
                handle.write(b"\n")

    @property
    def images(self) -> Path:
        return self.folder / IMAGES_DIR

    @property
    def inputs(self) -> Path:
        return self.folder / INPUTS_DIR

    def append(self, records: Iterable[Mapping[str, Any]], *, sync: bool = True) -> None:
        """Write records as one chunk and flush (they survive the process being killed), then
        fsync unless ``sync=False`` (then they survive a machine crash once the next fsync runs)."""
        text = "".join(json.dumps(dict(r), default=str, allow_nan=True) + "\n" for r in records)
        if not text:
            return
        with self._lock:
            if self._handle is None or self._handle.closed:
                self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            self._handle.write(text)
            self._handle.flush()
            fd = os.dup(self._handle.fileno()) if sync else -1
        if fd >= 0:
            try:
                os.fsync(fd)  # outside the lock: a writer on the event loop never waits for it
            finally:
                os.close(fd)

    def close(self) -> None:
        """Close the log file (appending opens it again)."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def records(self) -> list[dict[str, Any]]:
        """Every readable record in order (a torn or foreign line is skipped)."""
        out: list[dict[str, Any]] = []
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("key"), str):
                out.append(record)
        return out

    def state(self) -> LogState:
        """Fold the records into the latest outcome per cell key."""
        state = LogState()
        attempts: dict[str, Any] = {}
        for record in self.records():
            key = record["key"]
            if record.get("kind") == "submitted":
                state.submitted[key] = str(record.get("request_id"))
            elif record.get("kind") == "row":
                state.submitted.pop(key, None)
                if attempts.get(key) != record.get("attempt"):
                    attempts[key] = record.get("attempt")
                    state.rows[key] = []
                row = {k: v for k, v in record.items() if k != "kind"}
                state.rows[key].append(row)
        return state

    def write_plan(self, description: Mapping[str, Any]) -> None:
        """Replace ``sweep.json`` atomically."""
        data = json.dumps(dict(description), indent=1, default=str).encode()
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.folder / PLAN_FILE)

    def read_plan(self) -> dict[str, Any] | None:
        """The plan written by the last sweep in this folder, or None."""
        try:
            data = json.loads((self.folder / PLAN_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None
