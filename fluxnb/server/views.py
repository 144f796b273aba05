"""What the routes read from a job service and the class server steers in it: the request and
outcome counts (``/_fluxnb/stats``); a job's status snapshot, queue position, watchers (SSE
streams) and result files; pauses, the job list, per-person usage and the engine replicas (the
teacher's dashboard).

:class:`ServiceViews` is a part of :class:`~fluxnb.server.service.JobService` (its base class),
kept here so that the service module holds the queue and its state changes only; every method
takes the service's lock.

>>> from fluxnb.server.config import ServerConfig
>>> from fluxnb.server.service import JobService
>>> service = JobService(ServerConfig(engine="null"))
>>> service.count("status"); service.stats["requests"]["status"]
1
>>> service.pause("bob"); service.paused()
{'queue': False, 'owners': ['bob']}
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..protocol import COMPLETED, IN_QUEUE
from .quota import Quota
from .record import JobRecord
from .replicas import Replica
from .scheduler import FairScheduler
from .store import ResultStore

__all__ = ["JOB_OUTCOMES", "REQUEST_KINDS", "ServiceViews"]

#: The request kinds ``stats["requests"]`` counts.
REQUEST_KINDS = ("submit", "run", "status", "stream", "result", "cancel", "files")
#: The job outcomes ``stats["jobs"]`` counts (moderated: refused by the blocklist, also counted
#: as rejected; over_quota: refused with a 429, also counted as rejected).
JOB_OUTCOMES = ("submitted", "completed", "failed", "cancelled", "timed_out", "rejected",
                "moderated", "over_quota")


class ServiceViews:
    """Counts, pauses and the dashboard's views of a job service (a base class of
    :class:`~fluxnb.server.service.JobService`, which sets the attributes below)."""

    _lock: threading.Lock
    _work: threading.Condition
    _requests: dict[str, int]
    _outcomes: dict[str, int]
    _jobs: dict[str, JobRecord]
    _queue: FairScheduler[JobRecord]
    _running: set[JobRecord]
    _watched: set[JobRecord]
    _replicas: list[Replica]
    store: ResultStore
    quota: Quota

    if TYPE_CHECKING:
        def _touch_queued(self) -> None: ...

    # -- stats ----------------------------------------------------------------------------

    def count(self, kind: str) -> None:
        """Count one request of ``kind`` (submit, status, stream, result, cancel, files)."""
        with self._lock:
            self._requests[kind] = self._requests.get(kind, 0) + 1

    def count_rejected(self) -> None:
        """Count a submit the server refused (bad input, auth, size)."""
        with self._lock:
            self._outcomes["rejected"] += 1

    def count_moderated(self) -> None:
        """Count a submit whose prompt the blocklist refused (the app counts it as rejected too)."""
        with self._lock:
            self._outcomes["moderated"] += 1

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot: ``{"requests": {...}, "jobs": {...}, "queued": n, "running": n, "stored": n}``."""
        with self._lock:
            return {"requests": dict(self._requests), "jobs": dict(self._outcomes),
                    "queued": len(self._queue), "running": len(self._running),
                    "stored": len(self.store)}

    # -- one job: its status, its watchers, its files -----------------------------------------

    def snapshot(self, job: JobRecord, with_logs: bool) -> dict[str, Any]:
        """The job's status fields (without URLs), consistent under the lock."""
        with self._lock:
            body: dict[str, Any] = {"status": job.state}
            if job.state == IN_QUEUE:
                body["queue_position"] = self._queue.position(job)
            if job.state != IN_QUEUE:
                body["logs"] = [e.to_json() for e in job.logs] if with_logs else None
            if job.state == COMPLETED:
                body["metrics"] = ({"inference_time": job.inference_time}
                                   if job.inference_time is not None else {})
                if job.error is not None:
                    body["error"] = job.error
                    body["error_type"] = job.error_type
            return body

    def position(self, job: JobRecord) -> int | None:
        """0-based place in the queue (0 = next), or None when not queued."""
        with self._lock:
            return self._queue.position(job) if job.state == IN_QUEUE else None

    @contextmanager
    def watch(self, job: JobRecord, *, logs: bool = True) -> Iterator[asyncio.Event]:
        """An asyncio.Event set (from any thread) whenever ``job`` changes; use in a coroutine.
        With ``logs=False`` a new log line alone does not set it (state and position changes do)."""
        event = asyncio.Event()
        key = (asyncio.get_running_loop(), event, logs)
        with self._lock:
            job._watchers.add(key)
            self._watched.add(job)
        try:
            yield event
        finally:
            with self._lock:
                job._watchers.discard(key)
                if not job._watchers:
                    self._watched.discard(job)

    def file(self, token: str, name: str) -> tuple[Path, str] | None:
        """(path, content type) of a stored result file, or None."""
        return self.store.file(token, name)

    # -- the class server: pauses, the job list and usage (the dashboard's view) ------------

    def pause(self, owner: str | None = None) -> None:
        """Hold ``owner``'s queued jobs (None: the whole queue); running jobs finish.

        Held jobs stay queued (and may still time out or be cancelled). Their
        ``queue_position`` counts every runnable job first, then the held ones in their order;
        a paused queue keeps the positions it will resume with (see
        :class:`~fluxnb.server.scheduler.FairScheduler`).

        >>> # service.pause("bob"); service.paused() == {"queue": False, "owners": ["bob"]}
        """
        with self._lock:
            self._queue.pause(owner)
            self._touch_queued()

    def resume(self, owner: str | None = None) -> None:
        """Let ``owner``'s jobs (None: the whole queue) run again; idle workers wake up. A
        resumed owner's jobs take their turns from now on (no catch-up burst)."""
        with self._lock:
            self._queue.resume(owner)
            self._touch_queued()
            self._work.notify_all()

    def paused(self) -> dict[str, Any]:
        """``{"queue": bool, "owners": sorted names held}``."""
        with self._lock:
            return self._queue.paused()

    def replicas(self) -> list[dict[str, Any]]:
        """One ``{"device", "engine", "done", "running"}`` per engine replica (``--devices``)."""
        with self._lock:
            return [r.info() for r in self._replicas]

    def jobs(self, owner: str | None = None) -> list[JobRecord]:
        """Every job the service still knows (all owners when ``owner`` is None), oldest first."""
        with self._lock:
            return [j for j in self._jobs.values() if owner is None or j.owner == owner]

    def usage(self) -> dict[str, dict[str, Any]]:
        """Per owner, every roster person included: ``{"queued", "running", "completed",
        "failed", "megapixels", "usd"}`` and its limits (``max_queued``, ``budget_mp``,
        ``budget_usd``; None when unlimited). Megapixels and dollars are this server session's
        (the :class:`~fluxnb.server.quota.Ledger`; evicting old jobs does not reset them)."""
        with self._lock:
            return self.quota.usage(list(self._jobs.values()))
