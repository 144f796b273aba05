"""Results that survive a restart, and where a server keeps its state.

:class:`DurableResultStore` is the :class:`~fluxnb.server.store.InMemoryResultStore` with its
files in ``DIR/results/`` and its index in the :class:`~fluxnb.server.journal.Journal`;
:func:`state_for` decides, in one place, whether a server keeps durable state and where.

>>> from fluxnb.server.config import ServerConfig
>>> journal, store = state_for(ServerConfig(engine="null"))  # the laptop server: in memory
>>> journal is None, type(store).__name__
(True, 'InMemoryResultStore')
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ..protocol import COMPLETED, IN_PROGRESS, IN_QUEUE, LogEntry
from .config import ServerConfig
from .engines import EngineOutput, EngineRequest
from .journal import Journal, private_dir
from .record import JobRecord, now_iso
from .store import InMemoryResultStore, ResultStore, StoredResult

__all__ = ["RERUN_LINE", "DurableResultStore", "default_state_dir", "recover", "state_for"]

#: The log line of a job that was running when the server went down and runs again.
RERUN_LINE = "the server restarted while this job ran; running it again"


class DurableResultStore(InMemoryResultStore):
    """Result files under ``journal.directory / "results"``, indexed in the journal: after a
    restart every kept result is fetchable again. :meth:`close` keeps the files (the next start
    finds them); results go only by eviction (count, age, total size)."""

    def __init__(self, journal: Journal, max_results: int = 1000, *,
                 keep_results: float | None = None, max_bytes: int | None = None):
        super().__init__(max_results, keep_results=keep_results, max_bytes=max_bytes)
        self.journal = journal

    def open(self) -> None:
        """Load the index from the (open) journal; remove files nobody indexes (a job that was
        running at a crash)."""
        directory = self.journal.directory / "results"
        private_dir(directory)
        kept = self.journal.load_results()
        with self._lock:
            self._dir = directory
            self._kept.clear()
            self._files.clear()
            self._bytes = 0
            for job_id, token, files, size, kept_at in kept:
                self._kept[job_id] = (token, kept_at)
                if token is not None:
                    self._files[token] = (directory / token, files, size)
                    self._bytes += size
            known = set(self._files)
        for path in directory.iterdir():
            if path.name not in known:
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_dir():
                _private_files(path)  # results an older fluxnb kept world-readable

    def save(self, job_id: str, output: EngineOutput, request: EngineRequest,
             elapsed: float) -> StoredResult:
        """Write the result's files as the in-memory store does, then make them 0600 (their
        folder 0700): they are one person's pictures."""
        stored = super().save(job_id, output, request, elapsed)
        if stored.files_token is not None and self._dir is not None:
            _private_files(self._dir / stored.files_token)
        return stored

    def close(self) -> None:
        with self._lock:
            self._dir = None

    def _kept_locked(self, job_id: str, files_token: str | None,
                     entry: tuple[Path, dict[str, str], int] | None) -> None:
        files, size = ({}, 0) if entry is None else (entry[1], entry[2])
        self.journal.keep_result((job_id, files_token, dict(files), size,
                                  self._kept[job_id][1]))

    def _evicted_locked(self, job_ids: list[str]) -> None:
        if job_ids:
            self.journal.forget(job_ids)


def _private_files(folder: Path) -> None:
    """``folder`` 0700 and the files in it 0600."""
    folder.chmod(0o700)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o600)


def default_state_dir(config: ServerConfig) -> Path | None:
    """``config.state_dir``; else, with a roster, a per-server folder under the user's data dir
    (``$XDG_DATA_HOME`` or ``~/.local/share``)``/fluxnb/servers/<hash of host:port and roster>``;
    else None (the embedded laptop server keeps everything in memory)."""
    if config.state_dir is not None:
        return Path(config.state_dir).expanduser()
    if config.roster is None:
        return None
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    name = f"{config.host}:{config.port}|{Path(config.roster).expanduser().resolve()}"
    return Path(base) / "fluxnb" / "servers" / hashlib.sha256(name.encode()).hexdigest()[:16]


def state_for(config: ServerConfig) -> tuple[Journal | None, ResultStore]:
    """The journal (None: in memory) and the result store a server with ``config`` uses."""
    directory = default_state_dir(config)
    if directory is None:
        return None, InMemoryResultStore(config.max_results, keep_results=config.keep_results,
                                         max_bytes=config.max_result_bytes)
    journal = Journal(directory)
    return journal, DurableResultStore(journal, config.max_results,
                                       keep_results=config.keep_results,
                                       max_bytes=config.max_result_bytes)


def recover(jobs: list[JobRecord]) -> list[JobRecord]:
    """Jobs loaded after a restart, made whole: one that was running when the server went down
    is queued again once (``restarts`` + 1, a log line), or, if that already happened, ends
    COMPLETED with ``error_type`` ``server_restarted``. Queued and finished jobs stay as they were.

    >>> job = recover([JobRecord(id="r1", app="a", params={}, state=IN_PROGRESS)])[0]
    >>> job.state, job.restarts, job.logs[-1].message == RERUN_LINE
    ('IN_QUEUE', 1, True)
    >>> job.state = IN_PROGRESS; recover([job])[0].error_type
    'server_restarted'
    """
    for job in jobs:
        if job.state != IN_PROGRESS:
            continue
        job.started_at = job.inference_time = None
        if job.restarts < 1:
            job.restarts += 1
            job.state = IN_QUEUE
            job.logs.append(LogEntry(RERUN_LINE, "WARN", "USER", now_iso()))
            continue
        message = ("The server restarted twice while this job ran, so it was not run a third "
                   "time. Submit it again.")
        job.state = COMPLETED
        job.error, job.error_type, job.error_status = message, "server_restarted", 500
        job.error_body = {"detail": message, "error_type": "server_restarted"}
        job.image_data = job.mask_data = None
        job.logs.append(LogEntry(message, "ERROR", "USER", now_iso()))
    return jobs
