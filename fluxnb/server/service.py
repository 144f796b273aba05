"""The job service: the queue and its positions, state changes, watchers and the timeout
reaper of one server.

Knows nothing about HTTP: the app turns requests into :meth:`JobService.submit` /
:meth:`JobService.cancel` calls and jobs into status bodies. Three seams keep the policy apart:
a :class:`~fluxnb.server.scheduler.FairScheduler` decides which job runs next, a
:class:`~fluxnb.server.worker.Worker` runs it and a :class:`~fluxnb.server.store.ResultStore`
keeps its output. Worker threads wake asyncio listeners (SSE streams) through
:meth:`JobService.watch` without polling. Two base classes hold the rest: the counts and the
class server's views (:mod:`~fluxnb.server.views`) and the journal wiring for a restart
(:mod:`~fluxnb.server.restart`); the deadlines' heap is :mod:`~fluxnb.server.deadlines` and
the engine replicas are built in :mod:`~fluxnb.server.engine_setup`.

>>> from fluxnb.server.config import ServerConfig
>>> service = JobService(ServerConfig(engine="null"))
>>> service.start()
>>> # job = service.submit("fal-ai/flux-lora", params, image=img, mask=msk, owner="ada")
>>> service.stop()
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from PIL import Image

from ..protocol import COMPLETED, IN_PROGRESS, IN_QUEUE, LogEntry
from .auth import Person
from .config import ServerConfig
from .deadlines import Deadlines
from .durable import state_for
from .engine_setup import build_replicas
from .engine_setup import make_engine as _make_engine  # noqa: F401 - its old home
from .engines import Engine
from .inputs import FetchPolicy, ImageLimits
from .quota import Quota, QuotaExceeded, output_megapixels, requested_size
from .record import JobRecord, elide_data_uri, now_iso
from .replicas import Replica, input_size
from .restart import RestartableState
from .scheduler import FairScheduler, work_units
from .store import ResultStore, encode_image
from .views import JOB_OUTCOMES, REQUEST_KINDS, ServiceViews
from .worker import Done, Failed, Outcome, WorkerContext

__all__ = ["JobRecord", "JobService"]

logger = logging.getLogger("fluxnb.server")
_REAP_BATCH = 32  # expired jobs failed per hold of the lock (~ms; others get it in between)

_PRIORITIES = {"normal": 0, "low": 1}
_OUTCOMES = {"request_cancelled": "cancelled", "request_timeout": "timed_out"}  # by error_type


class JobService(ServiceViews, RestartableState):
    """Queue, workers and results of one server.

    ``stats`` counts requests by kind and jobs by outcome. Results live in ``store`` (by
    default an :class:`~fluxnb.server.store.InMemoryResultStore` of ``config.max_results``
    jobs, whose files :meth:`stop` deletes; with a state dir, durable ones).
    """

    def __init__(self, config: ServerConfig, engine: Engine | None = None, *,
                 store: ResultStore | None = None):
        self.config = config
        self.limits = ImageLimits(max_bytes=config.max_image_bytes,
                                  max_pixels=config.max_image_pixels,
                                  fetch=FetchPolicy(allow_private=config.allow_private_fetch,
                                                    allow_loopback=config.fetch_allow_loopback))
        # durable state (issue 11, item 8): a journal and durable results, or all in memory
        self.journal, default_store = state_for(config) if store is None else (None, store)
        self.store: ResultStore = default_store
        self._stopped = threading.Event()  # wakes the keep-results thread at stop()
        # -- queue and replicas (issue 11, items 3 and 9) --
        self._replicas = build_replicas(config, engine, self.store, self.limits)
        self.engine = self._replicas[0].engine  # what info() and the startup line show
        self._worker = self._replicas[0].worker
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._reap = threading.Condition(self._lock)
        self._jobs: dict[str, JobRecord] = {}
        self._queue: FairScheduler[JobRecord] = FairScheduler(_job_cost)
        self._deadlines = Deadlines()  # of the queued jobs that have one
        self._watched: set[JobRecord] = set()  # jobs with watchers: woken on position changes
        self._running: set[JobRecord] = set()
        self._seq = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._slots = self._replicas[0].slots
        # -- end queue and replicas --
        self._requests = dict.fromkeys(REQUEST_KINDS, 0)
        self._outcomes = dict.fromkeys(JOB_OUTCOMES, 0)  # over_quota: 429s (also rejected)
        # -- quotas and budgets (issue 11, item 4; fluxnb.server.quota) --
        self.quota = Quota(config)
        self.quota.slots = max(1, config.workers) * len(self._replicas)
        # -- end quotas --

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Load the engines (one replica per device), open the store and start the worker
        threads (``config.workers`` per replica) and the timeout thread."""
        for replica in self._replicas:
            replica.engine.load()
        if self.journal is not None:
            self.journal.open()
        self.store.open()
        self._stopping = False
        self._stopped.clear()
        self._reload()
        many = len(self._replicas) > 1
        targets: list[tuple[Any, str, tuple[Any, ...]]] = [
            (self._work_loop, f"fluxnb-worker-{r}-{i}" if many else f"fluxnb-worker-{i}",
             (replica,))
            for r, replica in enumerate(self._replicas) for i in range(self.config.workers)]
        targets.append((self._expire_loop, "fluxnb-results", ()))  # keep-results eviction
        for target, name, args in [*targets, (self._reaper, "fluxnb-timeouts", ())]:
            self._threads.append(threading.Thread(target=target, name=name, args=args,
                                                  daemon=True))
            self._threads[-1].start()
        if self.config.devices:
            logger.info("%d engine replicas on devices %s, %d worker(s) each",
                        len(self._replicas), ",".join(str(r.device) for r in self._replicas),
                        self.config.workers)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel running jobs, stop the threads and close the store (deleting result files)."""
        with self._lock:
            self._stopping = True
            for job in self._running:
                job.cancel_requested.set()
            self._work.notify_all()
            self._reap.notify_all()
        self._stopped.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        self.store.close()
        if self.journal is not None:  # queued and running jobs stay in it for the next start
            self.journal.close()

    # -- submit / look up / cancel --------------------------------------------------------

    def submit(self, app: str, params: dict[str, Any], *, image: bytes | Image.Image | None = None,
               mask: bytes | Image.Image | None = None, priority: str = "normal",
               start_timeout: float | None = None, ignored: list[str] | None = None,
               owner: str | None = None, person: Person | None = None) -> JobRecord:
        """Queue a job for ``owner``. ``image``/``mask`` are checked data-URI inputs, as their
        encoded bytes (an image is kept as PNG): the queued job holds them compressed and the
        worker decodes them; when None it downloads ``params["image_url"]`` / ``["mask_url"]``.
        ``person`` (who asks, as the roster has them now) brings the per-person limits; a job
        over a limit raises :class:`~fluxnb.server.quota.QuotaExceeded` and is not queued."""
        size = requested_size(params, image)  # quotas: before the data URI is elided
        params = dict(params)
        for name, given in (("image_url", image), ("mask_url", mask)):
            if given is not None:  # keep a short note, not megabytes of base64, per stored job
                params[name] = elide_data_uri(str(params.get(name, "")))
        job = JobRecord(id=str(uuid.uuid4()), app=app, params=params, owner=owner,
                        image_data=_encoded(image), mask_data=_encoded(mask),
                        priority=_PRIORITIES.get(priority, 0))
        if start_timeout is not None:
            job.deadline = job.submitted_at + start_timeout
        line = f"engine: {self.engine.info().get('name', self.engine.name)}"
        if not self.engine.generative:
            line += " (a preview engine, not a generative model)"
        job.logs.append(LogEntry(line, "INFO", "USER", now_iso()))
        if ignored:
            job.logs.append(LogEntry("ignored unknown input fields: " + ", ".join(ignored),
                                     "WARN", "USER", now_iso()))
        with self._lock:
            if self._stopping:
                raise RuntimeError("the server is stopping")
            try:  # quotas: admission, before the job is queued
                self.quota.admit(job.id, owner, size, person=person, waiting=len(self._queue),
                                 is_waiting=lambda: job.state == IN_QUEUE)
            except QuotaExceeded:
                self._outcomes["over_quota"] += 1
                raise
            self._seq += 1
            job.seq = self._seq
            self._jobs[job.id] = job
            self._queue.add(job)
            self._outcomes["submitted"] += 1
            self._touch_queued()
            self._work.notify()
            if job.deadline is not None:
                self._deadlines.push(job, queued=len(self._queue))
                self._reap.notify()
            self._journal_locked(job)
        return job

    def get(self, request_id: str) -> JobRecord | None:
        """The job with this id, or None (unknown or evicted)."""
        with self._lock:
            return self._jobs.get(request_id)

    def cancel(self, request_id: str) -> str:
        """``CANCELLATION_REQUESTED``, ``ALREADY_COMPLETED`` or ``NOT_FOUND``."""
        with self._lock:
            job = self._jobs.get(request_id)
            if job is None:
                return "NOT_FOUND"
            if job.state == COMPLETED:
                return "ALREADY_COMPLETED"
            job.cancel_requested.set()
            if job.state == IN_QUEUE:
                self._queue.remove(job)
                self._touch_queued()
                self._fail_locked(job, Failed.cancelled("cancelled while queued"))
            else:
                self._log_locked(job, "cancellation requested; stopping at the next step", "WARN")
        return "CANCELLATION_REQUESTED"

    def log(self, job: JobRecord, message: str, level: str = "INFO") -> None:
        """Append a line to ``job``'s logs and wake the watchers that show logs."""
        with self._lock:
            self._log_locked(job, message, level)

    # -- internals: threads ---------------------------------------------------------------

    def _work_loop(self, replica: Replica | None = None) -> None:
        replica = replica if replica is not None else self._replicas[0]
        while True:
            if not replica.slots.acquire(timeout=0.25):
                if self._stopping:
                    return
                continue
            try:
                job = self._next_job()
                if job is None:
                    return
                survived = self._run(job, replica)
            finally:
                replica.slots.release()
            if not survived:
                self._replace_worker(replica)
                return

    def _replace_worker(self, replica: Replica | None = None) -> None:
        """Start a fresh worker thread in place of the calling one, which ends."""
        with self._lock:
            if self._stopping:
                return
            name = threading.current_thread().name
            thread = threading.Thread(target=self._work_loop, name=name, args=(replica,),
                                      daemon=True)
            self._threads.append(thread)
        logger.warning("worker thread %s died; a new one takes its place", name)
        thread.start()

    def _next_job(self) -> JobRecord | None:
        """Wait for the job the scheduler picks and mark it IN_PROGRESS; None when stopping."""
        with self._lock:
            while True:
                if self._stopping:
                    return None
                job = self._queue.next()
                if job is None:
                    self._work.wait()
                    continue
                if job.deadline is not None and time.monotonic() >= job.deadline:
                    self._fail_locked(job, Failed.timed_out())
                    self._touch_queued()
                    continue
                job.state = IN_PROGRESS
                job.started_at = time.monotonic()
                self._running.add(job)
                self._journal_locked(job, usage=False)
                job._touch()
                self._touch_queued()
                return job

    def _run(self, job: JobRecord, replica: Replica | None = None) -> bool:
        """Run ``job`` and settle it; False when the engine raised a BaseException (SystemExit,
        KeyboardInterrupt, ...): the job fails with ``worker_died`` and this thread is replaced."""
        ctx = WorkerContext(job.id, job.cancel_requested,
                            lambda message, level: self.log(job, message, level))
        survived = True
        replica = replica if replica is not None else self._replicas[0]
        try:
            try:
                with self._lock:
                    replica.running.add(job)
                outcome = replica.worker.run(job.params, job.image_data, job.mask_data, ctx)
            except BaseException as exc:  # noqa: BLE001 - the worker only catches Exception
                survived = False
                outcome = Failed.engine_failed(job.id, replica.engine.name, exc,
                                               error_type="worker_died",
                                               what="the worker running this job died")
            with self._lock:
                self._settle_locked(job, outcome)
        finally:
            job.image_data = job.mask_data = None
            with self._lock:
                self._running.discard(job)
                replica.running.discard(job)
                replica.done += 1
        return survived

    def _reaper(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                wait: float | None = 1.0  # after a failure: log it, go on a second later
                try:
                    wait = self._reap_locked()
                except Exception:  # noqa: BLE001 - the timeout thread must outlive any bug
                    logger.exception("the timeout thread failed; it goes on")
                if wait != 0.0:
                    self._reap.wait(wait)
                    continue
            time.sleep(0)  # a full batch done: let the requests waiting for the lock in first

    def _reap_locked(self) -> float | None:
        """Fail up to one batch of queued jobs past their deadline; seconds until the next one
        (0: more are due now, None: no deadline left). The queued jobs' watchers are woken
        once per batch."""
        now = time.monotonic()
        due = self._deadlines.due(now, _REAP_BATCH)
        for job in due:
            self._queue.remove(job)
            self._fail_locked(job, Failed.timed_out())
        if due:
            self._touch_queued()
        return self._deadlines.wait(now)

    # -- internals: state changes (caller holds the lock) ---------------------------------

    def _touch_queued(self) -> None:
        """Positions changed: wake the queued jobs someone watches (SSE streams, run waits);
        an unwatched job's position is read fresh by the next status request anyway."""
        for job in list(self._watched):
            if job.state == IN_QUEUE:
                job._touch()

    def _log_locked(self, job: JobRecord, message: str, level: str = "INFO") -> None:
        job.logs.append(LogEntry(message, level, "USER", now_iso()))
        job._touch(logs_only=True)

    def _settle_locked(self, job: JobRecord, outcome: Outcome) -> None:
        if isinstance(outcome, Failed):
            self._fail_locked(job, outcome)
            return
        assert isinstance(outcome, Done)
        if job.cancel_requested.is_set():
            # the engine had already finished: a late cancel never throws results away
            self._log_locked(job, "cancel arrived after the images were made; kept them", "WARN")
        job.inference_time = round(outcome.elapsed, 6)
        job.result = outcome.result
        job.files_token = outcome.files_token
        job.cost_usd = outcome.cost_usd
        self.quota.ran_for(outcome.elapsed)  # quotas: keep the usage and the wait estimate
        self.quota.finish(job.id, ran=True, cost_usd=outcome.cost_usd,
                          megapixels=output_megapixels(outcome.result))
        self._log_locked(job, f"done in {outcome.elapsed:.3f} s")
        self._complete_locked(job)
        self._outcomes["completed"] += 1

    def _fail_locked(self, job: JobRecord, failure: Failed) -> None:
        self._log_locked(job, failure.log, failure.level)
        job.error_status = failure.status
        job.error_body = failure.body
        job.error = failure.error
        job.error_type = failure.error_type
        job.error_headers = dict(failure.headers)
        # quotas: refund a job that never reached the engine (cancelled or timed out while
        # queued, or an input the worker could not use)
        self.quota.finish(job.id, ran=job.started_at is not None and failure.status != 422)
        self._outcomes[_OUTCOMES.get(failure.error_type, "failed")] += 1
        self._complete_locked(job)

    def _complete_locked(self, job: JobRecord) -> None:
        job.state = COMPLETED
        if job.started_at is not None and job.inference_time is None and job.error is None:
            job.inference_time = round(time.monotonic() - job.started_at, 6)
        job._touch()
        if self._stopping and job.error_type == "request_cancelled" and self.journal is not None:
            return  # a job stop() cancels stays running in the journal: it reruns at the next start
        self._journal_locked(job)
        self._forget_locked(self.store.keep(job.id, job.files_token))

def _job_cost(job: JobRecord) -> float:
    """The fair queue's cost of ``job``: megapixels x steps x images (see work_units)."""
    return work_units(job.params, input_size(job.image_data))


def _encoded(given: bytes | Image.Image | None) -> bytes | None:
    """A queued input kept compressed: encoded bytes as given, an image as PNG (lossless)."""
    return encode_image(given, "png") if isinstance(given, Image.Image) else given
