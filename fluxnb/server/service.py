"""The job service: the queue and its positions, state changes, watchers, the timeout reaper and
the stats of one server.

Knows nothing about HTTP: the app turns requests into :meth:`JobService.submit` /
:meth:`JobService.cancel` calls and jobs into status bodies. Three seams keep the policy apart:
a :class:`~fluxnb.server.scheduler.FifoScheduler` decides which job runs next, a
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
from .config import ServerConfig
from .engines import Engine, create_engine
from .inputs import FetchPolicy, ImageLimits
from .record import JobRecord, elide_data_uri, now_iso
from .scheduler import FifoScheduler
from .store import InMemoryResultStore, ResultStore
from .worker import Done, Failed, Outcome, Worker, WorkerContext

__all__ = ["JobRecord", "JobService"]

logger = logging.getLogger("fluxnb.server")
_REAP_WAIT_MAX = 3600.0  # the timeout thread wakes at least this often (threading's waits overflow)

_PRIORITIES = {"normal": 0, "low": 1}
_REQUEST_KINDS = ("submit", "run", "status", "stream", "result", "cancel", "files")
_JOB_OUTCOMES = ("submitted", "completed", "failed", "cancelled", "timed_out", "rejected")
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
        self.engine = engine if engine is not None else _make_engine(config)
        self.limits = ImageLimits(max_bytes=config.max_image_bytes,
                                  max_pixels=config.max_image_pixels,
                                  fetch=FetchPolicy(allow_private=config.allow_private_fetch,
                                                    allow_loopback=config.fetch_allow_loopback))
        self.store: ResultStore = store if store is not None else InMemoryResultStore(
            config.max_results)
        self._worker = Worker(self.engine, self.store, self.limits, config.fetch_timeout)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._reap = threading.Condition(self._lock)
        self._jobs: dict[str, JobRecord] = {}
        self._queue: FifoScheduler[JobRecord] = FifoScheduler()
        self._running: set[JobRecord] = set()
        self._seq = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        slots = config.workers
        if self.engine.max_concurrency is not None:
            slots = max(1, min(slots, self.engine.max_concurrency))
        self._slots = threading.BoundedSemaphore(slots)
        self._requests = dict.fromkeys(_REQUEST_KINDS, 0)
        self._outcomes = dict.fromkeys(_JOB_OUTCOMES, 0)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Load the engine, open the store and start the worker and timeout threads."""
        self.engine.load()
        self.store.open()
        self._stopping = False
        targets = [(self._work_loop, f"fluxnb-worker-{i}") for i in range(self.config.workers)]
        for target, name in [*targets, (self._reaper, "fluxnb-timeouts")]:
            self._threads.append(threading.Thread(target=target, name=name, daemon=True))
            self._threads[-1].start()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel running jobs, stop the threads and close the store (deleting result files)."""
        with self._lock:
            self._stopping = True
            for job in self._running:
                job.cancel_requested.set()
            self._work.notify_all()
            self._reap.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        self.store.close()

    # -- stats ----------------------------------------------------------------------------

    def count(self, kind: str) -> None:
        """Count one request of ``kind`` (submit, status, stream, result, cancel, files)."""
        with self._lock:
            self._requests[kind] = self._requests.get(kind, 0) + 1

    def count_rejected(self) -> None:
        """Count a submit the server refused (bad input, auth, size)."""
        with self._lock:
            self._outcomes["rejected"] += 1

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot: ``{"requests": {...}, "jobs": {...}, "queued": n, "running": n, "stored": n}``."""
        with self._lock:
            return {"requests": dict(self._requests), "jobs": dict(self._outcomes),
                    "queued": len(self._queue), "running": len(self._running),
                    "stored": len(self.store)}

    # -- submit / look up / cancel --------------------------------------------------------

    def submit(self, app: str, params: dict[str, Any], *, image: Image.Image | None = None,
               mask: Image.Image | None = None, priority: str = "normal",
               start_timeout: float | None = None, ignored: list[str] | None = None,
               owner: str | None = None) -> JobRecord:
        """Queue a job for ``owner``. ``image``/``mask`` are pre-decoded data-URI inputs; when
        None the worker downloads ``params["image_url"]`` / ``params["mask_url"]``."""
        params = dict(params)
        for name, decoded in (("image_url", image), ("mask_url", mask)):
            if decoded is not None:  # keep a short note, not megabytes of base64, per stored job
                params[name] = elide_data_uri(str(params.get(name, "")))
        job = JobRecord(id=str(uuid.uuid4()), app=app, params=params, owner=owner, image=image,
                        mask=mask, priority=_PRIORITIES.get(priority, 0))
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
            self._seq += 1
            job.seq = self._seq
            self._jobs[job.id] = job
            self._queue.add(job)
            self._outcomes["submitted"] += 1
            self._touch_queued()
            self._work.notify()
            if job.deadline is not None:
                self._reap.notify()
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
        try:
            yield event
        finally:
            with self._lock:
                job._watchers.discard(key)

    def file(self, token: str, name: str) -> tuple[Path, str] | None:
        """(path, content type) of a stored result file, or None."""
        return self.store.file(token, name)

    # -- the class server: pauses, the job list and usage (the dashboard's view) ------------

    def pause(self, owner: str | None = None) -> None:
        """Hold ``owner``'s queued jobs (None: the whole queue); running jobs finish."""
        raise NotImplementedError  # the fair scheduler brings it (issue 11)

    def resume(self, owner: str | None = None) -> None:
        """Let ``owner``'s jobs (None: the whole queue) run again."""
        raise NotImplementedError

    def paused(self) -> dict[str, Any]:
        """``{"queue": bool, "owners": sorted names held}``."""
        return {"queue": False, "owners": []}

    def jobs(self, owner: str | None = None) -> list[JobRecord]:
        """Every job the service still knows (all owners when ``owner`` is None), oldest first."""
        with self._lock:
            return [j for j in self._jobs.values() if owner is None or j.owner == owner]

    def usage(self) -> dict[str, dict[str, Any]]:
        """Per owner: ``{"queued", "running", "completed", "failed", "megapixels", "usd"}`` and
        its limits (``max_queued``, ``budget_mp``, ``budget_usd``; None when unlimited)."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for job in self._jobs.values():
                row = out.setdefault(str(job.owner), {"queued": 0, "running": 0, "completed": 0,
                                                      "failed": 0, "megapixels": 0.0, "usd": 0.0})
                if job.state == IN_QUEUE:
                    row["queued"] += 1
                elif job.state == IN_PROGRESS:
                    row["running"] += 1
                elif job.error is None:
                    row["completed"] += 1
                else:
                    row["failed"] += 1
        return out

    # -- internals: threads ---------------------------------------------------------------

    def _work_loop(self) -> None:
        while True:
            if not self._slots.acquire(timeout=0.25):
                if self._stopping:
                    return
                continue
            try:
                job = self._next_job()
                if job is None:
                    return
                survived = self._run(job)
            finally:
                self._slots.release()
            if not survived:
                self._replace_worker()
                return

    def _replace_worker(self) -> None:
        """Start a fresh worker thread in place of the calling one, which ends."""
        with self._lock:
            if self._stopping:
                return
            name = threading.current_thread().name
            thread = threading.Thread(target=self._work_loop, name=name, daemon=True)
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
                    continue
                job.state = IN_PROGRESS
                job.started_at = time.monotonic()
                self._running.add(job)
                job._touch()
                self._touch_queued()
                return job

    def _run(self, job: JobRecord) -> bool:
        """Run ``job`` and settle it; False when the engine raised a BaseException (SystemExit,
        KeyboardInterrupt, ...): the job fails with ``worker_died`` and this thread is replaced."""
        ctx = WorkerContext(job.id, job.cancel_requested,
                            lambda message, level: self.log(job, message, level))
        survived = True
        try:
            try:
                outcome = self._worker.run(job.params, job.image, job.mask, ctx)
            except BaseException as exc:  # noqa: BLE001 - the worker only catches Exception
                survived = False
                outcome = Failed.engine_failed(job.id, self.engine.name, exc,
                                               error_type="worker_died",
                                               what="the worker running this job died")
            with self._lock:
                self._settle_locked(job, outcome)
        finally:
            job.image = job.mask = None
            with self._lock:
                self._running.discard(job)
        return survived

    def _reaper(self) -> None:
        with self._lock:
            while not self._stopping:
                wait: float | None = 1.0  # after a failure: log it, go on a second later
                try:
                    wait = self._reap_locked()
                except Exception:  # noqa: BLE001 - the timeout thread must outlive any bug
                    logger.exception("the timeout thread failed; it goes on")
                self._reap.wait(wait)

    def _reap_locked(self) -> float | None:
        """Fail the queued jobs past their deadline; seconds until the next one (None: none)."""
        now = time.monotonic()
        nearest: float | None = None
        for job in self._queue:
            if job.deadline is None:
                continue
            if job.deadline <= now:
                self._queue.remove(job)
                self._fail_locked(job, Failed.timed_out())
                self._touch_queued()
            elif nearest is None or job.deadline < nearest:
                nearest = job.deadline
        return None if nearest is None else min(max(0.0, nearest - now), _REAP_WAIT_MAX)

    # -- internals: state changes (caller holds the lock) ---------------------------------

    def _touch_queued(self) -> None:
        for job in self._queue:
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
        self._outcomes[_OUTCOMES.get(failure.error_type, "failed")] += 1
        self._complete_locked(job)

    def _complete_locked(self, job: JobRecord) -> None:
        job.state = COMPLETED
        if job.started_at is not None and job.inference_time is None and job.error is None:
            job.inference_time = round(time.monotonic() - job.started_at, 6)
        job._touch()
        for old_id in self.store.keep(job.id, job.files_token):
            old = self._jobs.pop(old_id, None)
            if old is not None:
                old.files_token = None


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
    elif config.engine == "fal":
        if config.upstream is not None:
            options.setdefault("upstream", config.upstream)
        options.setdefault("key", config.fal_key)
    return create_engine(config.engine, **options)
