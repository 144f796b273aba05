"""The job service: queue with priorities and positions, worker threads, results and files.

Knows nothing about HTTP: the app turns requests into :meth:`JobService.submit` /
:meth:`JobService.cancel` calls and jobs into status bodies. Worker threads wake asyncio
listeners (SSE streams) through :meth:`Job.watch` without polling.

>>> from fluxnb.server.config import ServerConfig
>>> service = JobService(ServerConfig(engine="null"))
>>> service.start()
>>> # job = service.submit("fal-ai/flux-lora", params, image=img, mask=msk)
>>> service.stop()
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import collections
import io
import logging
import secrets
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from ..protocol import LogEntry
from .config import ServerConfig
from .engines import Engine, EngineCancelled, EngineInputError, EngineRequest, create_engine
from .inputs import DownloadStopped, ImageLimits, InputError, fetch_image, prepare_pair

__all__ = ["FILES_PREFIX", "Job", "JobService"]

logger = logging.getLogger("fluxnb.server")

#: Where the server serves result files: ``/_fluxnb/files/{token}/{name}``.
FILES_PREFIX = "/_fluxnb/files/"

IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"
_PRIORITIES = {"normal": 0, "low": 1}
_SEED_RANGE = 2**32
_JPEG_QUALITY = 95


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(eq=False)
class Job:
    """One request: inputs, state, logs and (once COMPLETED) a result or an error."""

    id: str
    app: str
    params: dict[str, Any]
    priority: int = 0
    seq: int = 0
    image: Image.Image | None = None
    mask: Image.Image | None = None
    deadline: float | None = None
    state: str = IN_QUEUE
    logs: list[LogEntry] = field(default_factory=list)
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    inference_time: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    error_status: int | None = None
    error_body: dict[str, Any] | None = None
    error_headers: dict[str, str] = field(default_factory=dict)
    files_token: str | None = None
    version: int = 0
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    # (loop, event, wants_logs): a watcher without logs is not woken by a new log line alone
    _watchers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event, bool]] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.state == COMPLETED and self.error is None

    def _sort_key(self) -> tuple[int, int]:
        return (self.priority, self.seq)

    def _touch(self, *, logs_only: bool = False) -> None:
        """Bump the version and wake the asyncio watchers (caller holds the service lock); for a
        new log line alone, only those that show logs (a cross-thread wake-up per step adds up)."""
        self.version += 1
        for watcher in list(self._watchers):
            loop, event, wants_logs = watcher
            if logs_only and not wants_logs:
                continue
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the watcher's loop is closed
                self._watchers.discard(watcher)


class _Context:
    """The :class:`~fluxnb.server.engines.JobContext` a worker hands the engine."""

    def __init__(self, service: JobService, job: Job):
        self._service = service
        self._job = job

    def log(self, message: str, level: str = "INFO") -> None:
        self._service._log(self._job, message, level)

    def step(self, done: int, total: int, *, image_index: int = 0, num_images: int = 1) -> None:
        text = f"step {done}/{total}"
        if num_images > 1:
            text = f"image {image_index + 1}/{num_images}: {text}"
        self.log(text)
        self.check_cancelled()

    @property
    def cancelled(self) -> bool:
        return self._job.cancel_requested.is_set()

    def check_cancelled(self) -> None:
        if self._job.cancel_requested.is_set():
            raise EngineCancelled(self._job.id)


class JobService:
    """Queue, workers and result store of one server.

    ``stats`` counts requests by kind and jobs by outcome. Result files live in a temp dir
    owned by the service and removed by :meth:`stop`.
    """

    def __init__(self, config: ServerConfig, engine: Engine | None = None):
        self.config = config
        self.engine = engine if engine is not None else create_engine(
            config.engine, **dict(config.engine_options))
        self.limits = ImageLimits(max_bytes=config.max_image_bytes,
                                  max_pixels=config.max_image_pixels)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._reap = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._queue: list[Job] = []
        self._completed: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._running: set[Job] = set()
        self._files: dict[str, tuple[Path, dict[str, str]]] = {}
        self._seq = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._files_dir: Path | None = None
        slots = config.workers
        if self.engine.max_concurrency is not None:
            slots = max(1, min(slots, self.engine.max_concurrency))
        self._slots = threading.BoundedSemaphore(slots)
        self._requests = dict.fromkeys(("submit", "run", "status", "stream", "result", "cancel", "files"),
                                       0)
        self._outcomes = dict.fromkeys(("submitted", "completed", "failed", "cancelled",
                                        "timed_out", "rejected"), 0)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Load the engine, make the files dir and start the worker and timeout threads."""
        self.engine.load()
        self._files_dir = Path(tempfile.mkdtemp(prefix="fluxnb-server-"))
        # removed by stop(); this also covers a notebook that exits without stopping the server
        weakref.finalize(self, shutil.rmtree, str(self._files_dir), ignore_errors=True)
        self._stopping = False
        for i in range(self.config.workers):
            t = threading.Thread(target=self._worker, name=f"fluxnb-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._reaper, name="fluxnb-timeouts", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel running jobs, stop the threads and delete the result files."""
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
        if self._files_dir is not None:
            shutil.rmtree(self._files_dir, ignore_errors=True)
            self._files_dir = None

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
                    "stored": len(self._completed)}

    # -- submit / look up / cancel --------------------------------------------------------

    def submit(self, app: str, params: dict[str, Any], *, image: Image.Image | None = None,
               mask: Image.Image | None = None, priority: str = "normal",
               start_timeout: float | None = None, ignored: list[str] | None = None) -> Job:
        """Queue a job. ``image``/``mask`` are pre-decoded data-URI inputs; when None the
        worker downloads ``params["image_url"]`` / ``params["mask_url"]``."""
        params = dict(params)
        for name, decoded in (("image_url", image), ("mask_url", mask)):
            if decoded is not None:  # keep a short note, not megabytes of base64, per stored job
                params[name] = _elide(str(params.get(name, "")))
        job = Job(id=str(uuid.uuid4()), app=app, params=params, image=image, mask=mask,
                  priority=_PRIORITIES.get(priority, 0))
        if start_timeout is not None:
            job.deadline = job.submitted_at + start_timeout
        info = self.engine.info()
        line = f"engine: {info.get('name', self.engine.name)}"
        if not self.engine.generative:
            line += " (a preview engine, not a generative model)"
        job.logs.append(LogEntry(line, "INFO", "USER", _now_iso()))
        if ignored:
            job.logs.append(LogEntry("ignored unknown input fields: " + ", ".join(ignored),
                                     "WARN", "USER", _now_iso()))
        with self._lock:
            if self._stopping:
                raise RuntimeError("the server is stopping")
            self._seq += 1
            job.seq = self._seq
            self._jobs[job.id] = job
            bisect.insort(self._queue, job, key=Job._sort_key)
            self._outcomes["submitted"] += 1
            self._touch_queued()
            self._work.notify()
            if job.deadline is not None:
                self._reap.notify()
        return job

    def get(self, request_id: str) -> Job | None:
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
                self._log_locked(job, "cancelled while queued", "WARN")
                self._fail_locked(job, *_cancelled_error())
            else:
                self._log_locked(job, "cancellation requested; stopping at the next step", "WARN")
        return "CANCELLATION_REQUESTED"

    def snapshot(self, job: Job, with_logs: bool) -> dict[str, Any]:
        """The job's status fields (without URLs), consistent under the lock."""
        with self._lock:
            body: dict[str, Any] = {"status": job.state}
            if job.state == IN_QUEUE:
                body["queue_position"] = self._position(job)
            if job.state != IN_QUEUE:
                body["logs"] = [e.to_json() for e in job.logs] if with_logs else None
            if job.state == COMPLETED:
                body["metrics"] = ({"inference_time": job.inference_time}
                                   if job.inference_time is not None else {})
                if job.error is not None:
                    body["error"] = job.error
                    body["error_type"] = job.error_type
            return body

    def position(self, job: Job) -> int | None:
        """0-based place in the queue (0 = next), or None when not queued."""
        with self._lock:
            return self._position(job) if job.state == IN_QUEUE else None

    @contextmanager
    def watch(self, job: Job, *, logs: bool = True) -> Iterator[asyncio.Event]:
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
        with self._lock:
            entry = self._files.get(token)
            if entry is None or name not in entry[1]:
                return None
            return entry[0] / name, entry[1][name]

    # -- internals: queue -----------------------------------------------------------------

    def _position(self, job: Job) -> int:
        try:
            return self._queue.index(job)
        except ValueError:
            return 0

    def _touch_queued(self) -> None:
        for job in self._queue:
            job._touch()

    def _worker(self) -> None:
        while True:
            if not self._slots.acquire(timeout=0.25):
                if self._stopping:
                    return
                continue
            try:
                job = self._take()
                if job is None:
                    return
                self._run(job)
            finally:
                self._slots.release()

    def _take(self) -> Job | None:
        with self._lock:
            while True:
                if self._stopping:
                    return None
                if self._queue:
                    job = self._queue.pop(0)
                    if job.deadline is not None and time.monotonic() >= job.deadline:
                        self._expire_locked(job)
                        continue
                    job.state = IN_PROGRESS
                    job.started_at = time.monotonic()
                    self._running.add(job)
                    job._touch()
                    self._touch_queued()
                    return job
                self._work.wait()

    def _reaper(self) -> None:
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                nearest: float | None = None
                for job in list(self._queue):
                    if job.deadline is None:
                        continue
                    if job.deadline <= now:
                        self._queue.remove(job)
                        self._expire_locked(job)
                        self._touch_queued()
                    elif nearest is None or job.deadline < nearest:
                        nearest = job.deadline
                self._reap.wait(None if nearest is None else max(0.0, nearest - now))

    def _expire_locked(self, job: Job) -> None:
        self._log_locked(job, "request timed out before it started (X-Fal-Request-Timeout)",
                         "ERROR")
        self._fail_locked(job, 504, {"detail": "Request timed out", "error_type": "request_timeout"},
                          "Request timed out", "request_timeout",
                          {"X-Fal-Request-Timeout-Type": "user"})

    # -- internals: running ---------------------------------------------------------------

    def _run(self, job: Job) -> None:
        ctx = _Context(self, job)
        params = job.params
        try:
            image = job.image if job.image is not None else self._download(job, ctx, "image_url", "RGB")
            mask = job.mask if job.mask is not None else self._download(job, ctx, "mask_url", "L")
            (mw, mh), (iw, ih) = mask.size, image.size
            image, mask = prepare_pair(image, mask, params.get("image_size"))
            if (mw, mh) != (iw, ih):
                ctx.log(f"mask_url: the mask is {mw}x{mh}; resized to the image's {iw}x{ih} "
                        f"(same aspect ratio)")
            seed = params.get("seed")
            if seed is None:
                seed = secrets.randbelow(_SEED_RANGE)
                ctx.log(f"seed: {seed} (random)")
            else:
                ctx.log(f"seed: {seed}")
            request = EngineRequest(image=image, mask=mask, params=dict(params), seed=int(seed))
            t0 = time.perf_counter()
            output = self.engine.run(request, ctx)
            elapsed = time.perf_counter() - t0
            result = self._store_output(job, output, request, elapsed)
        except (EngineCancelled, DownloadStopped):
            with self._lock:
                self._log_locked(job, "cancelled", "WARN")
                self._fail_locked(job, *_cancelled_error())
        except InputError as exc:
            self._fail_input(job, exc.detail(), exc.message, exc.error_type)
        except EngineInputError as exc:
            detail = [{"loc": ["body", exc.field], "msg": str(exc), "type": exc.error_type}]
            self._fail_input(job, detail, str(exc), exc.error_type)
        except Exception as exc:  # noqa: BLE001 - an engine bug must not kill the worker
            logger.exception("job %s: engine %s failed", job.id, self.engine.name)
            message = f"internal error in engine {self.engine.name!r}: {type(exc).__name__}: {exc}"
            with self._lock:
                self._log_locked(job, message[:500], "ERROR")
                self._fail_locked(job, 500, {"detail": message[:500],
                                             "error_type": "internal_error"},
                                  message[:500], "internal_error")
        else:
            with self._lock:
                if job.cancel_requested.is_set():
                    # the engine had already finished: a late cancel never throws results away
                    self._log_locked(job, "cancel arrived after the images were made; kept them",
                                     "WARN")
                job.inference_time = round(elapsed, 6)
                job.result = result
                self._log_locked(job, f"done in {elapsed:.3f} s")
                self._complete_locked(job)
                self._outcomes["completed"] += 1
        finally:
            job.image = job.mask = None
            with self._lock:
                self._running.discard(job)

    def _download(self, job: Job, ctx: _Context, field: str, mode: str) -> Image.Image:
        """Fetch an http(s) input in the worker (data URIs were decoded at submit)."""
        ctx.log(f"downloading {field}")
        image = fetch_image(job.params[field], field, self.limits, timeout=self.config.fetch_timeout,
                            mode=mode, should_stop=job.cancel_requested.is_set)
        ctx.check_cancelled()
        return image

    def _fail_input(self, job: Job, detail: list[dict[str, Any]], message: str,
                    error_type: str) -> None:
        with self._lock:
            self._log_locked(job, message[:500], "ERROR")
            self._fail_locked(job, 422, {"detail": detail}, message, error_type)

    def _store_output(self, job: Job, output: Any, request: EngineRequest,
                      elapsed: float) -> dict[str, Any]:
        params = request.params
        fmt = params.get("output_format", "jpeg")
        sync = bool(params.get("sync_mode"))
        ext, mime = ("png", "image/png") if fmt == "png" else ("jpg", "image/jpeg")
        token = secrets.token_urlsafe(18)
        images: list[dict[str, Any]] = []
        written: dict[str, str] = {}
        directory: Path | None = None
        if not sync:
            if self._files_dir is None:
                raise RuntimeError("the job service is not started")
            directory = self._files_dir / token
            directory.mkdir()
        for i, img in enumerate(output.images):
            data = _encode(img, fmt)
            name = f"{job.id}-{i}.{ext}"
            if sync:
                url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
            else:
                assert directory is not None
                (directory / name).write_bytes(data)
                written[name] = mime
                url = f"{FILES_PREFIX}{token}/{name}"
            images.append({"url": url, "width": img.width, "height": img.height,
                           "content_type": mime, "file_name": name, "file_size": len(data)})
        if directory is not None:
            with self._lock:
                self._files[token] = (directory, written)
                job.files_token = token
        nsfw = output.has_nsfw_concepts
        if nsfw is None or len(nsfw) != len(images):
            nsfw = [False] * len(images)
        timings = {"inference": round(elapsed, 6), **dict(output.timings)}
        result: dict[str, Any] = {"images": images, "timings": timings, "seed": request.seed,
                                  "has_nsfw_concepts": [bool(x) for x in nsfw],
                                  "prompt": request.prompt}
        for key, value in output.extra.items():
            result.setdefault(key, value)
        return result

    # -- internals: state changes (caller holds the lock) ---------------------------------

    def _log(self, job: Job, message: str, level: str = "INFO") -> None:
        with self._lock:
            self._log_locked(job, message, level)

    def _log_locked(self, job: Job, message: str, level: str = "INFO") -> None:
        job.logs.append(LogEntry(message, level, "USER", _now_iso()))
        job._touch(logs_only=True)

    def _fail_locked(self, job: Job, status: int, body: dict[str, Any], error: str,
                     error_type: str, headers: dict[str, str] | None = None) -> None:
        job.error_status = status
        job.error_body = body
        job.error = error
        job.error_type = error_type
        job.error_headers = dict(headers or {})
        outcome = {"request_cancelled": "cancelled", "request_timeout": "timed_out"}
        self._outcomes[outcome.get(error_type, "failed")] += 1
        self._complete_locked(job)

    def _complete_locked(self, job: Job) -> None:
        job.state = COMPLETED
        if job.started_at is not None and job.inference_time is None and job.error is None:
            job.inference_time = round(time.monotonic() - job.started_at, 6)
        self._completed[job.id] = job
        job._touch()
        while len(self._completed) > self.config.max_results:
            _, old = self._completed.popitem(last=False)
            self._jobs.pop(old.id, None)
            self._drop_files_locked(old)

    def _drop_files_locked(self, job: Job) -> None:
        if job.files_token is None:
            return
        entry = self._files.pop(job.files_token, None)
        job.files_token = None
        if entry is not None:
            shutil.rmtree(entry[0], ignore_errors=True)


def _elide(uri: str) -> str:
    """``data:image/png;base64,iVBO... (123456 chars)`` for a long data URI; others unchanged."""
    if not uri.startswith("data:") or len(uri) <= 64:
        return uri
    return f"{uri[:40]}... ({len(uri)} chars)"


def _cancelled_error() -> tuple[int, dict[str, Any], str, str]:
    return (400, {"detail": "Request was cancelled", "error_type": "request_cancelled"},
            "Request was cancelled", "request_cancelled")


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        if img.mode not in ("RGB", "RGBA", "L", "LA"):
            img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        img.save(buf, format="PNG")
    else:
        if img.mode != "RGB":
            img = img.convert("RGB")
        img.save(buf, format="JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue()
