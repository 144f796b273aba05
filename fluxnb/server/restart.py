"""How a job service keeps its state across a restart (``--state-dir``) and lets old results go
(``--keep-results``): each job change is noted in the :class:`~fluxnb.server.journal.Journal`,
the journal's jobs and usage come back at start, and a thread evicts results by age.
:meth:`~RestartableState.wait_saved` blocks until the changes noted so far are on disk (the
submit route waits for it before answering, so a ``kill -9`` cannot lose a job whose id the
client holds).

:class:`RestartableState` is a part of :class:`~fluxnb.server.service.JobService` (its base
class); with no journal (the in-memory laptop server) noting is a no-op and nothing reloads.

>>> import tempfile
>>> from fluxnb.server.config import ServerConfig
>>> from fluxnb.server.service import JobService
>>> folder = tempfile.TemporaryDirectory()
>>> config = ServerConfig(engine="null", state_dir=folder.name)
>>> service = JobService(config); service.pause(); service.start()  # paused: nothing runs
>>> job = service.submit("fal-ai/flux-lora", {"prompt": "p"}, owner="ada")
>>> service.stop(); again = JobService(config); again.pause(); again.start()
>>> again.get(job.id).owner, again.get(job.id).state
('ada', 'IN_QUEUE')
>>> again.stop(); folder.cleanup()
"""

from __future__ import annotations

import logging
import threading
import time

from ..protocol import COMPLETED, IN_QUEUE
from .config import ServerConfig
from .deadlines import Deadlines
from .durable import recover
from .journal import Journal
from .quota import Quota, requested_size
from .record import JobRecord
from .scheduler import FairScheduler
from .store import ResultStore

__all__ = ["RestartableState"]

logger = logging.getLogger("fluxnb.server")


class RestartableState:
    """The journal wiring of a job service (a base class of
    :class:`~fluxnb.server.service.JobService`, which sets the attributes below)."""

    config: ServerConfig
    journal: Journal | None
    store: ResultStore
    quota: Quota
    _lock: threading.Lock
    _work: threading.Condition
    _reap: threading.Condition
    _stopped: threading.Event
    _jobs: dict[str, JobRecord]
    _queue: FairScheduler[JobRecord]
    _deadlines: Deadlines
    _seq: int

    def wait_saved(self, timeout: float = 10.0) -> bool:
        """Block until every change noted so far (a submitted job, say) is committed to the
        state journal, so a ``kill -9`` cannot lose it; True at once without a journal (the
        in-memory laptop server). It waits on the disk: call it from a thread, not the event
        loop (the submit route uses ``run_in_threadpool``).

        >>> # job = service.submit(...); service.wait_saved()  # now the 200 may go out
        """
        return True if self.journal is None else self.journal.sync(timeout)

    def _journal_locked(self, job: JobRecord, *, usage: bool = True) -> None:
        """Note ``job``'s change (and the usage) for the journal's writer: no I/O here."""
        if self.journal is not None:
            self.journal.save(job)
            if usage:
                self.journal.save_usage(self.quota.ledger.snapshot())

    def _forget_locked(self, job_ids: list[str]) -> None:
        """Evicted jobs: the service forgets them (their status is a 404 from now on)."""
        for old_id in job_ids:
            old = self._jobs.pop(old_id, None)
            if old is not None:
                old.files_token = None

    def _reload(self) -> None:
        """After a restart: the journal's jobs, usage and order back in place (see
        :func:`~fluxnb.server.durable.recover` for the jobs that were running)."""
        if self.journal is None:
            return
        jobs = recover(self.journal.load_jobs())
        usage = self.journal.load_usage()
        with self._lock:
            self.quota.ledger.restore(usage)
            for job in jobs:
                if job.id in self._jobs:  # started again in this process: still known
                    continue
                self._seq = max(self._seq, job.seq)
                self._jobs[job.id] = job
                if job.state == COMPLETED:
                    if job.error_type == "server_restarted":
                        self.quota.finish(job.id, ran=True)
                        self._forget_locked(self.store.keep(job.id, None))
                        self.journal.save(job)
                    continue
                self._queue.add(job)
                self.quota.adopt(job.id, job.owner, requested_size(job.params, job.image_data),
                                 lambda job=job: job.state == IN_QUEUE)  # type: ignore[misc]
                if job.deadline is not None:
                    self._deadlines.push(job, queued=len(self._queue))
                self.journal.save(job)
            self._work.notify_all()
            self._reap.notify()

    def _expire_loop(self) -> None:
        """Evict the results older than ``config.keep_results`` now and then."""
        period = min(60.0, max(0.5, self.config.keep_results / 20))
        while not self._stopped.wait(period):
            try:
                expired = self.store.expire(time.time()) if hasattr(self.store, "expire") else []
                if expired:
                    with self._lock:
                        self._forget_locked(expired)
            except Exception:  # noqa: BLE001 - the thread must outlive any bug
                logger.exception("evicting old results failed; trying again later")
