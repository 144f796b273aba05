"""The job service: the queue and its positions, state changes, watchers, the timeout reaper and
the stats of one server.

Knows nothing about HTTP: the app turns requests into :meth:`JobService.submit` /
:meth:`JobService.cancel` calls and jobs into status bodies. Three seams keep the policy apart:
a :class:`~fluxnb.server.scheduler.FairScheduler` decides which job runs next, a
:class:`~fluxnb.server.worker.Worker` runs it and a :class:`~fluxnb.server.store.ResultStore`
keeps its output. Worker threads wake asyncio listeners (SSE streams) through
:meth:`JobService.watch` without polling.

>>> from fluxnb.server.config import ServerConfig
>>> service = JobService(ServerConfig(engine="null"))
>>> service.start()
>>> # job = service.submit("fal-ai/flux-lora", params, image=img, mask=msk, owner="ada")
>>> service.stop()
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from ..protocol import COMPLETED, IN_PROGRESS, IN_QUEUE, LogEntry
from .auth import Person
from .config import ServerConfig
from .durable import recover, state_for
from .engines import Engine, create_engine
from .inputs import FetchPolicy, ImageLimits
from .quota import Quota, QuotaExceeded, requested_size
from .record import JobRecord, elide_data_uri, now_iso
from .replicas import Replica, input_size, resolve_devices
from .scheduler import FairScheduler, work_units
from .store import ResultStore, encode_image
from .worker import Done, Failed, Outcome, Worker, WorkerContext

__all__ = ["JobRecord", "JobService"]

logger = logging.getLogger("fluxnb.server")
_REAP_WAIT_MAX = 3600.0  # the timeout thread wakes at least this often (threading's waits overflow)
_REAP_BATCH = 32  # expired jobs failed per hold of the lock (~ms; others get it in between)

_PRIORITIES = {"normal": 0, "low": 1}
_REQUEST_KINDS = ("submit", "run", "status", "stream", "result", "cancel", "files")
_JOB_OUTCOMES = ("submitted", "completed", "failed", "cancelled", "timed_out", "rejected",
                 "moderated")  # moderated: refused by the blocklist (also counted as rejected)
_OUTCOMES = {"request_cancelled": "cancelled", "request_timeout": "timed_out"}  # by error_type


class JobService:
    """Queue, workers and results of one server.

    ``stats`` counts requests by kind and jobs by outcome. Results live in ``store`` (by
    default an :class:`~fluxnb.server.store.InMemoryResultStore` of ``config.max_results``
    jobs, whose files :meth:`stop` deletes).
    """

    def __init__(self, config: ServerConfig, engine: Engine | None = None, *,
                 store: ResultStore | None = None):
        self.config = config
        # -- queue and replicas (issue 11, items 3 and 9) --
        devices = resolve_devices(config.devices) if engine is None else (None,)
        engines = [engine] if engine is not None else [_make_engine(config, d) for d in devices]
        self.engine = engines[0]  # the first replica: what info() and the startup line show
        self.limits = ImageLimits(max_bytes=config.max_image_bytes,
                                  max_pixels=config.max_image_pixels,
                                  fetch=FetchPolicy(allow_private=config.allow_private_fetch,
                                                    allow_loopback=config.fetch_allow_loopback))
        # durable state (issue 11, item 8): a journal and durable results, or all in memory
        self.journal, default_store = state_for(config) if store is None else (None, store)
        self.store: ResultStore = default_store
        self._stopped = threading.Event()  # wakes the keep-results thread at stop()
        self._replicas = [
            Replica(e, Worker(e, self.store, self.limits, config.fetch_timeout),
                    threading.BoundedSemaphore(_slots(config.workers, e)), device)
            for e, device in zip(engines, devices, strict=True)]
        self._worker = self._replicas[0].worker
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._reap = threading.Condition(self._lock)
        self._jobs: dict[str, JobRecord] = {}
        self._queue: FairScheduler[JobRecord] = FairScheduler(_job_cost)
        self._deadlines: list[tuple[float, int, JobRecord]] = []  # a heap; lazy deletion
        self._watched: set[JobRecord] = set()  # jobs with watchers: woken on position changes
        self._running: set[JobRecord] = set()
        self._seq = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._slots = self._replicas[0].slots
        # -- end queue and replicas --
        self._requests = dict.fromkeys(_REQUEST_KINDS, 0)
        self._outcomes = dict.fromkeys(_JOB_OUTCOMES, 0)
        # -- quotas and budgets (issue 11, item 4; fluxnb.server.quota) --
        self.quota = Quota(config)
        self.quota.slots = max(1, config.workers) * len(self._replicas)
        self._outcomes["over_quota"] = 0  # submits refused with a 429 (also counted as rejected)
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

    # -- stats ----------------------------------------------------------------------------

    def count(self, kind: str) -> None:
        """Count one request of ``kind`` (submit, status, stream, result, cancel, files)."""
        with self._lock:
            self._requests[kind] = self._requests.get(kind, 0) + 1

    def count_rejected(self) -> None:
        """Count a submit the server refused (bad input, auth, size)."""
        with self._lock:
            self._outcomes["rejected"] += 1

    # -- moderation (issue 11, item 6) --
    def count_moderated(self) -> None:
        """Count a submit whose prompt the blocklist refused (the app counts it as rejected too)."""
        with self._lock:
            self._outcomes["moderated"] += 1
    # -- end moderation --

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot: ``{"requests": {...}, "jobs": {...}, "queued": n, "running": n, "stored": n}``."""
        with self._lock:
            return {"requests": dict(self._requests), "jobs": dict(self._outcomes),
                    "queued": len(self._queue), "running": len(self._running),
                    "stored": len(self.store)}

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
                self._push_deadline_locked(job)
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
        """Fail up to one batch of queued jobs past their deadline (a heap of deadlines, stale
        entries dropped as they surface); seconds until the next one (0: more are due now,
        None: no deadline left). The queued jobs' watchers are woken once per batch."""
        now = time.monotonic()
        heap, failed = self._deadlines, 0
        while heap and heap[0][0] <= now and failed < _REAP_BATCH:
            _deadline, _seq, job = heapq.heappop(heap)
            if job.state != IN_QUEUE:
                continue  # started, cancelled or already failed: a stale entry
            self._queue.remove(job)
            self._fail_locked(job, Failed.timed_out())
            failed += 1
        if failed:
            self._touch_queued()
        if not heap:
            return None
        return min(max(0.0, heap[0][0] - now), _REAP_WAIT_MAX)

    def _push_deadline_locked(self, job: JobRecord) -> None:
        """Note ``job``'s deadline for the reaper; the heap is rebuilt from the queued jobs
        when stale entries outnumber them (amortised O(log N) per job)."""
        assert job.deadline is not None
        if len(self._deadlines) > 2 * len(self._queue) + 64:
            self._deadlines = [e for e in self._deadlines if e[2].state == IN_QUEUE]
            heapq.heapify(self._deadlines)
        heapq.heappush(self._deadlines, (job.deadline, job.seq, job))

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
        self.quota.finish(job.id, ran=True, cost_usd=outcome.cost_usd)
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

    # -- durable state and kept results (issue 11, item 8; fluxnb.server.journal, durable) --

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
                    self._push_deadline_locked(job)
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

    # -- end durable state --


def _slots(workers: int, engine: Engine) -> int:
    """Concurrent jobs on one replica: ``workers``, at most what the engine allows."""
    if engine.max_concurrency is None:
        return workers
    return max(1, min(workers, engine.max_concurrency))


def _job_cost(job: JobRecord) -> float:
    """The fair queue's cost of ``job``: megapixels x steps x images (see work_units)."""
    return work_units(job.params, input_size(job.image_data))


def _encoded(given: bytes | Image.Image | None) -> bytes | None:
    """A queued input kept compressed: encoded bytes as given, an image as PNG (lossless)."""
    return encode_image(given, "png") if isinstance(given, Image.Image) else given


def _make_engine(config: ServerConfig, device: str | None = None) -> Engine:
    """The engine ``config`` names (one replica; ``device`` for ``--devices``), given the class
    server's options that engine takes: ``device`` and the LoRA rules (diffusers), the upstream
    and the server's own key (fal)."""
    options = dict(config.engine_options)
    if config.engine == "diffusers":
        if device is not None:
            options["device"] = device
        options.setdefault("lora_dir", config.lora_dir)
        options.setdefault("allow_hub_loras", config.allow_hub_loras)
        # LoRA URLs go through the same fetch guard as image_url / mask_url
        options.setdefault("allow_private_fetch", config.allow_private_fetch)
        options.setdefault("fetch_allow_loopback", config.fetch_allow_loopback)
        options.setdefault("fetch_timeout", config.fetch_timeout)
    elif config.engine == "fal":
        if config.upstream is not None:
            options.setdefault("upstream", config.upstream)
        options.setdefault("key", config.fal_key)
    return create_engine(config.engine, **options)
