"""Running a sweep: an async core with bounded concurrency, and a sync facade.

``asweep`` runs in the caller's event loop (``await fluxnb.asweep(...)`` in a notebook, or
``create_task`` from a panel). ``sweep`` is the blocking twin, through :func:`fluxnb._aio.run_blocking`:
``asyncio.run`` when no loop is running in this thread (scripts), else a worker thread with its
own loop (a Jupyter kernel always has one running). No nest_asyncio.

Cancelling the task (or a KeyboardInterrupt in ``sweep``) cancels the jobs in flight on the
server; every finished row is already in the run folder.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import io
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._aio import run_blocking
from ..datauri import sniff_mime
from ..errors import JobFailedError, JobTimeoutError, QueueHTTPError, ValidationError
from ..protocol import Completed, InProgress
from ..schema import PRICE_PER_MEGAPIXEL
from .cache import ResultCache, cache_key, default_cache_dir, place
from .core import Sweep
from .log import RunLog
from .metrics import METRICS, inpaint_metrics
from .plan import Cell, Plan, Preflight, build_plan

__all__ = ["DEFAULT_MAX_JOBS", "ProgressCallback", "asweep", "sweep"]

#: Sweeps that would send more jobs than this stop before sending anything (``max_jobs=``).
DEFAULT_MAX_JOBS = 100

#: ``progress=`` may be a callable ``(done, total, row)``; ``row`` is the job's first row (a dict).
ProgressCallback = Callable[[int, int, "Mapping[str, Any] | None"], Any]

#: Seconds to wait for the server to acknowledge each cancel when a sweep is stopped.
_CANCEL_TIMEOUT = 5.0
_URL_KEEP = 80


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _short_url(url: str) -> str:
    """URLs as logged: data URIs cut to their head (no megabytes of base64 in a frame)."""
    if url.startswith("data:"):
        return f"{url[:40]}...({len(url)} chars)"
    return url


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    detail = getattr(exc, "error", None)  # a failed job's own error, as the server gave it
    if detail is not None and str(detail) not in text:
        text += f": {detail}"
    return text if len(text) <= 500 else text[:497] + "..."


# -- progress ------------------------------------------------------------------------------------


class _Progress:
    """tqdm.auto, a callable ``(done, total, row)``, or nothing."""

    def __init__(self, progress: Any, total: int, initial: int):
        self.total, self.done, self.failed = total, initial, 0
        self._bar: Any = None
        self._fn: ProgressCallback | None = None
        if progress == "auto":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc="sweep", unit="job", leave=True)
        elif callable(progress):
            self._fn = progress
        elif progress is not None:
            raise TypeError(f"progress={progress!r}: use 'auto', None or a callable (done, total, row)")

    def start(self) -> None:
        if self._fn is not None:
            self._fn(self.done, self.total, None)

    def update(self, row: Mapping[str, Any] | None) -> None:
        self.done += 1
        if row is not None and row.get("status") != "ok":
            self.failed += 1
        if self._bar is not None:
            if self.failed:
                self._bar.set_postfix(failed=self.failed, refresh=False)
            self._bar.update(1)
        if self._fn is not None:
            self._fn(self.done, self.total, row)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# -- preparation (sync, no network) ----------------------------------------------------------------


@dataclass
class _Prepared:
    plan: Plan
    log: RunLog
    cache: ResultCache | None
    backend: str
    pending: list[Cell]
    reattach: dict[str, str]
    preflight: Preflight
    progress: _Progress | None = None
    before: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _backend(client: Any) -> str:
    """The backend's identity for the cache and the log: URL (without any credentials) and app."""
    import urllib.parse

    parts = urllib.parse.urlsplit(str(client.base_url))
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) + f"/{client.app}"


def _resolve_cache(cache: Any) -> ResultCache | None:
    if cache is False or cache is None:
        return None
    if cache is True:
        return ResultCache(default_cache_dir())
    if isinstance(cache, ResultCache):
        return cache
    return ResultCache(cache)


def _cell_row(cell: Cell, attempt: str) -> dict[str, Any]:
    return {"kind": "row", "cell": cell.index, **cell.params, **cell.columns(), "key": cell.key,
            "attempt": attempt}


def _prepare(client: Any, base_inputs: Mapping[str, Any], folder: Path, axes: Mapping[str, Any],
             opts: dict[str, Any]) -> _Prepared:
    log = RunLog(folder)
    plan = build_plan(base_inputs, axes, seeds=opts["seeds"], sample=opts["sample"],
                      random_state=opts["random_state"], price_per_megapixel=opts["price_per_megapixel"],
                      seconds_per_job=opts["seconds_per_job"])
    backend = _backend(client)
    log.write_plan({**plan.describe(), "backend": backend, "written_at": _now()})
    log.inputs.mkdir(exist_ok=True)
    log.images.mkdir(exist_ok=True)
    for cell in plan.cells:
        for image in cell.images.values():
            if image.data is not None:
                path = log.inputs / f"{image.digest.split(':')[1][:16]}.{_ext(image.data)}"
                if not path.exists():
                    path.write_bytes(image.data)
    state = log.state()
    done = state.done
    reattach = state.reattachable()
    cache = _resolve_cache(opts["cache"])
    pending: list[Cell] = []
    hits: list[dict[str, Any]] = []
    n_done = n_cached = 0
    for cell in plan.cells:
        if cell.key in done:
            n_done += 1
            continue
        cached = cache.get(cache_key(cell.key, backend=backend)) if cache is not None and \
            cell.key not in reattach else None
        if cached is None:
            pending.append(cell)
            continue
        n_cached += 1
        attempt = uuid.uuid4().hex[:12]
        for row in cached:
            target = log.images / _image_name(cell, int(row.get("image_index", 0)), row.get("file"))
            place(cache.object_path(str(row["sha256"])), target)  # type: ignore[union-attr]
            hits.append({**row, **_cell_row(cell, attempt), "file": str(target), "cached": True,
                         "finished_at": _now()})
    log.append(hits)  # one write + fsync for every cache hit
    preflight = plan.preflight(concurrency=opts["concurrency"], done=n_done, cached=n_cached,
                               pending=pending, priced=bool(getattr(client, "is_fal", True)))
    return _Prepared(plan=plan, log=log, cache=cache, backend=backend, pending=pending,
                     reattach={k: v for k, v in reattach.items() if k in {c.key for c in pending}},
                     preflight=preflight)


def _ext(data: bytes) -> str:
    return {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(sniff_mime(data) or "",
                                                                              "bin")


def _image_name(cell: Cell, index: int, original: Any = None) -> str:
    ext = Path(str(original)).suffix.lstrip(".") if original else "png"
    return f"{cell.index:05d}-{cell.key[:10]}-{index}.{ext or 'png'}"


# -- the async core --------------------------------------------------------------------------------


def _async_twin(client: Any) -> Any:
    """An AsyncQueueClient with ``client``'s settings and connections of its own."""
    return client.clone(asynchronous=True)


def _postprocess(prep: _Prepared, cell: Cell, blobs: list[bytes], base: dict[str, Any],
                 urls: list[str]) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Save every image, hash it, measure it; the rows of one finished job."""
    from PIL import Image

    before, mask = _before_and_mask(prep, cell)
    rows: list[dict[str, Any]] = []
    files: dict[str, Path] = {}
    for i, blob in enumerate(blobs):
        digest = hashlib.sha256(blob).hexdigest()
        path = prep.log.images / _image_name(cell, i, f"x.{_ext(blob)}")
        path.write_bytes(blob)
        files[digest] = path
        row = {**base, "image_index": i, "url": _short_url(urls[i]) if i < len(urls) else None,
               "file": str(path), "bytes": len(blob), "sha256": digest}
        try:
            with Image.open(io.BytesIO(blob)) as img:
                img.load()
                row["width"], row["height"] = img.size
                if before is not None and mask is not None:
                    row.update(inpaint_metrics(before, mask, img))
        except Exception as exc:  # noqa: BLE001 - an unreadable image is a row with an error
            row["status"], row["error"] = "error", f"output image {i} unreadable: {_error_text(exc)}"
        for name in METRICS:
            row.setdefault(name, math.nan)
        rows.append(row)
    return rows, files


def _finish_job(prep: _Prepared, cell: Cell, blobs: list[bytes], base: dict[str, Any],
                urls: list[str]) -> list[dict[str, Any]]:
    """In a worker thread: save, hash and measure the images, cache the job, log its rows."""
    rows, files = _postprocess(prep, cell, blobs, base, urls)
    if prep.cache is not None and rows and all(r["status"] == "ok" for r in rows):
        stored = [{k: v for k, v in r.items() if k not in ("kind", "file")}
                  | {"file": Path(str(r["file"])).name} for r in rows]
        prep.cache.put(cache_key(cell.key, backend=prep.backend), stored, files)
    prep.log.append(rows)
    return rows


def _before_and_mask(prep: _Prepared, cell: Cell) -> tuple[Any, Any]:
    from PIL import Image

    out = []
    for name, mode in (("image_url", "RGB"), ("mask_url", "L")):
        image = cell.images.get(name)
        if image is None or image.data is None:
            return None, None
        with prep.lock:
            decoded = prep.before.get(image.digest)
            if decoded is None:
                decoded = Image.open(io.BytesIO(image.data)).convert(mode)
                prep.before[image.digest] = decoded
        out.append(decoded)
    return out[0], out[1]


async def _execute(prep: _Prepared, aclient: Any, *, concurrency: int, timeout: float | None) -> None:
    # One thread saves, measures and logs finished jobs, in order. A pool of them would fight
    # the event loop for the GIL and delay the next submit by a switch interval (5 ms) at a time.
    disk = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fluxnb-sweep-io")
    try:
        await _execute_with(prep, aclient, disk, concurrency=concurrency, timeout=timeout)
    finally:
        disk.shutdown(wait=True)  # every finished row is on disk before the sweep returns


async def _execute_with(prep: _Prepared, aclient: Any, disk: concurrent.futures.Executor, *,
                        concurrency: int, timeout: float | None) -> None:
    sem = asyncio.Semaphore(concurrency)
    inflight: dict[str, tuple[Cell, Any]] = {}
    submitting: dict[asyncio.Future[Any], Cell] = {}
    progress = prep.progress
    loop = asyncio.get_running_loop()

    async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
        return await loop.run_in_executor(disk, functools.partial(fn, *args))

    async def record(rows: list[dict[str, Any]]) -> None:
        await off_loop(prep.log.append, rows)

    async def follow(job: Any, started: list[float]) -> Completed:
        """The job's statuses (SSE, else polling) until COMPLETED; after ``timeout`` seconds
        the job is cancelled on the server and JobTimeoutError raised."""
        try:
            async with asyncio.timeout(timeout), contextlib.aclosing(
                    aclient.stream_status(job, logs=False)) as statuses:
                async for status in statuses:
                    if isinstance(status, InProgress) and not started:
                        started.append(time.perf_counter())
                    if isinstance(status, Completed):
                        return status
        except TimeoutError:
            try:
                outcome = await asyncio.wait_for(aclient.cancel(job), _CANCEL_TIMEOUT)
            except Exception:  # noqa: BLE001 - the timeout is what the row reports
                outcome = "unknown"
            raise JobTimeoutError(job.request_id, float(timeout or 0),
                                  cancelled=outcome == "CANCELLATION_REQUESTED") from None
        raise QueueHTTPError(0, "the status stream ended before COMPLETED",
                             request_id=job.request_id)

    async def submit(cell: Cell) -> Any:
        task = asyncio.ensure_future(aclient.submit(cell.inputs))
        submitting[task] = cell
        # cancelled here, the submit goes on: the cleanup waits for its request id (even when
        # it is already answered) and cancels the job it created
        job = await asyncio.shield(task)
        submitting.pop(task, None)
        inflight[cell.key] = (cell, job)
        # written (not yet fsync'd: the next row does that) before anything else can happen,
        # so a resumed sweep re-attaches to this job instead of submitting the cell again
        prep.log.append([{"kind": "submitted", "key": cell.key, "cell": cell.index,
                          "request_id": job.request_id, "at": _now()}], sync=False)
        return job

    async def run_cell(cell: Cell) -> None:
        attempt = uuid.uuid4().hex[:12]
        base = _cell_row(cell, attempt)
        job: Any = None
        phase = "submit"
        started: list[float] = []
        t0 = time.perf_counter()
        try:
            # the slot covers a job's time on the server (queued or running), not the download
            # of its result: the next cell is submitted as soon as this one completes
            async with sem:
                t0 = time.perf_counter()
                old = prep.reattach.get(cell.key)
                completed: Completed | None = None
                if old is not None:
                    job, phase = aclient.job(old), "wait"
                    inflight[cell.key] = (cell, job)
                    try:
                        completed = await follow(job, started)
                    except QueueHTTPError as exc:
                        if exc.status_code != 404:
                            raise
                        completed = None  # the server no longer knows it
                    if completed is None or completed.error_type == "request_cancelled":
                        inflight.pop(cell.key, None)  # gone or cancelled: submit it afresh
                        job, phase, started, t0 = None, "submit", [], time.perf_counter()
                if job is None:
                    job = await submit(cell)
                    phase = "wait"
                    completed = await follow(job, started)
                inflight.pop(cell.key, None)
            result = await aclient.result(job)
            blobs = await result.aimage_bytes()
            done_at = time.perf_counter()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing cell is a row, not the end
            inflight.pop(cell.key, None)
            if isinstance(exc, JobTimeoutError):
                phase = "timeout"
            elif isinstance(exc, JobFailedError):
                phase = "job"
            elif isinstance(exc, ValidationError):
                phase = "submit"
            row = {**base, "status": "error", "error": _error_text(exc), "phase": phase,
                   "request_id": getattr(job, "request_id", None) or getattr(exc, "request_id", None),
                   "image_index": None, "total_s": round(time.perf_counter() - t0, 4),
                   "cached": False, "finished_at": _now()}
            await record([row])
            if progress is not None:
                progress.update(row)
            return
        total = done_at - t0
        inference = result.timings.get("inference")
        if inference is None and completed is not None:
            inference = completed.metrics.get("inference_time")
        queue = (started[0] - t0) if started else (
            max(0.0, total - float(inference)) if inference is not None else None)
        base.update({"status": "ok", "error": None, "request_id": job.request_id,
                     "seed": result.seed if result.seed is not None else cell.seed,
                     "queue_s": None if queue is None else round(queue, 4),
                     "inference_s": None if inference is None else round(float(inference), 4),
                     "total_s": round(total, 4), "cached": False, "finished_at": _now()})
        urls = [image.url for image in result.images]
        try:
            rows = await off_loop(_finish_job, prep, cell, blobs, base, urls)
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the job is kept on the server
            rows = [{**base, "status": "error", "error": f"saving the result: {_error_text(exc)}",
                     "phase": "wait", "image_index": None}]
            await record(rows)
        if progress is not None:
            progress.update(rows[0] if rows else None)

    tasks = [asyncio.ensure_future(run_cell(cell)) for cell in prep.pending]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _cancel_on_server(prep, aclient, inflight, submitting, off_loop)
        raise


async def _cancel_on_server(prep: _Prepared, aclient: Any, inflight: dict[str, tuple[Cell, Any]],
                            submitting: Mapping[asyncio.Future[Any], Cell],
                            off_loop: Callable[..., Awaitable[Any]]) -> None:
    """Cancel every job still queued or running, and log those cells as ``cancelled``."""
    jobs = dict(inflight)
    if submitting:  # a submit whose answer had not arrived: wait briefly for its request id
        await asyncio.wait(list(submitting), timeout=_CANCEL_TIMEOUT)
        for future, cell in submitting.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                jobs.setdefault(cell.key, (cell, future.result()))

    async def cancel(cell: Cell, job: Any) -> dict[str, Any]:
        try:
            outcome = await asyncio.wait_for(aclient.cancel(job), _CANCEL_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - best effort: say what happened in the row
            outcome = f"cancel failed: {_error_text(exc)}"
        return {**_cell_row(cell, uuid.uuid4().hex[:12]), "status": "cancelled",
                "error": f"sweep cancelled ({outcome})", "phase": "cancelled",
                "request_id": job.request_id, "cached": False, "finished_at": _now()}

    rows = await asyncio.gather(*(cancel(cell, job) for cell, job in jobs.values()))
    await off_loop(prep.log.append, rows)


# -- public API ----------------------------------------------------------------------------------


def _options(kwargs: dict[str, Any]) -> dict[str, Any]:
    opts = {
        "sample": None, "random_state": None, "seeds": None, "concurrency": 8,
        "max_jobs": DEFAULT_MAX_JOBS, "cache": True, "progress": "auto", "timeout": None,
        "price_per_megapixel": PRICE_PER_MEGAPIXEL, "seconds_per_job": None, "verbose": True,
        "dry_run": False,
    }
    for name in list(kwargs):
        if name in opts:
            opts[name] = kwargs.pop(name)
    concurrency = opts["concurrency"]
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency={concurrency!r} must be an integer >= 1")
    return opts


def _folder(folder: str | os.PathLike[str] | None) -> Path:
    if folder is None:
        return Path(tempfile.mkdtemp(prefix="fluxnb-sweep-"))
    return Path(folder).expanduser()


def _announce(prep: _Prepared, opts: dict[str, Any]) -> None:
    if opts["verbose"]:
        print(f"{prep.preflight}; folder {prep.log.folder}", file=sys.stdout, flush=True)


def _start(prep: _Prepared, opts: dict[str, Any]) -> None:
    _announce(prep, opts)
    if not opts["dry_run"]:
        prep.plan.check_size(prep.preflight, opts["max_jobs"])
        total = len(prep.plan.cells)
        prep.progress = _Progress(opts["progress"] if prep.pending else None, total,
                                  total - len(prep.pending))
        prep.progress.start()


async def _run_async(prep: _Prepared, client: Any, own: bool, opts: dict[str, Any]) -> None:
    aclient = _async_twin(client) if own else client
    try:
        await _execute(prep, aclient, concurrency=opts["concurrency"], timeout=opts["timeout"])
    finally:
        if own:
            await aclient.aclose()


async def asweep(client: Any = None, base_inputs: Mapping[str, Any] | None = None,
                 folder: str | os.PathLike[str] | None = None, **axes: Any) -> Sweep:
    """The async core of :func:`sweep` (same arguments); run it in the caller's event loop.

    >>> s = await fluxnb.asweep(client, {"prompt": "p", "image_url": img, "mask_url": m},
    ...                         "runs/a", steps=[10, 20], strength="0.5-1 [3]")   # doctest: +SKIP

    Cancelling the task cancels the jobs in flight on the server and re-raises CancelledError;
    the finished rows are in the folder (``Sweep.load(folder)``).
    """
    from ..client import AsyncQueueClient

    opts = _options(axes)
    created = client is None
    if client is None:
        from ..backends import connect

        client = connect()  # its settings make the async client, created in this loop
    own = not isinstance(client, AsyncQueueClient)
    try:
        run_folder = _folder(folder)
        prep = _prepare(client, base_inputs or {}, run_folder, axes, opts)
        try:
            _start(prep, opts)
            if prep.pending and not opts["dry_run"]:
                await _run_async(prep, client, own, opts)
        finally:
            _close(prep)
    finally:
        if created:
            client.close()
    return Sweep.load(run_folder)


def _close(prep: _Prepared) -> None:
    if prep.progress is not None:
        prep.progress.close()
    prep.log.close()


def sweep(client: Any = None, base_inputs: Mapping[str, Any] | None = None,
          folder: str | os.PathLike[str] | None = None, **axes: Any) -> Sweep:
    """Run ``base_inputs`` over every combination of ``axes``; returns a :class:`Sweep`.

    >>> s = fluxnb.sweep(client, {"prompt": "a gold pin", "image_url": image, "mask_url": mask},
    ...                  "runs/steps-strength", steps=[4, 8, 16], strength="0.5-1 [3]")  # doctest: +SKIP
    >>> s.frame                    # one row per output image            # doctest: +SKIP

    **Axes** (keyword arguments): any schema field or alias (``steps``, ``guidance``,
    ``strength``, ``seed``, ``prompt``, ``mask``, ``image``, ``lora_scale``...) as a list, a
    numpy array, a range or an A1111 string (``"1-10 [5]"``, ``"1-5 (+2)"``). The first axis is
    the outermost loop.

    **Options** (keyword only): ``sample=n`` runs n cells drawn with ``random_state``;
    ``seeds`` is the seed policy: an int (every cell), ``"fixed"`` (default: the base seed or one
    drawn once), ``"per_cell"`` or a list with one seed per cell; ``concurrency`` (8) jobs at
    once; ``max_jobs`` (100): refuse bigger sweeps, ``None`` for no limit; ``cache`` (True, False
    or a folder; default ``$FLUXNB_CACHE_DIR`` or ``~/.cache/fluxnb/sweeps``); ``progress``
    (``"auto"`` for tqdm.auto, None, or a callable ``(done, total, row)``); ``timeout`` per job;
    ``price_per_megapixel`` (0.035) and ``seconds_per_job`` for the estimate (the cost is shown
    only when the client talks to fal.ai); ``verbose`` (print the pre-flight line); ``dry_run``
    (plan and print, send nothing).

    ``folder`` is the run folder (a new temp folder when None): the log is written there after
    every job, and running the same sweep with the same folder resumes it. A KeyboardInterrupt
    cancels the jobs in flight on the server and returns the finished rows
    (``sweep.interrupted`` is True).
    """
    opts = _options(axes)
    if client is None:
        from ..backends import connect

        client = connect()
    # the sweep runs on an async twin of its own (same URL, key, app, transport and retry
    # settings), closed when the sweep ends; a sync client has no async methods to share
    run_folder = _folder(folder)
    prep = _prepare(client, base_inputs or {}, run_folder, axes, opts)
    interrupted = False
    try:
        _start(prep, opts)
        if prep.pending and not opts["dry_run"]:
            try:
                run_blocking(_run_async(prep, client, True, opts))
            except KeyboardInterrupt:  # the task was cancelled: in-flight jobs were cancelled
                interrupted = True
    finally:
        _close(prep)
    result = Sweep.load(run_folder, interrupted=interrupted)
    if interrupted and opts["verbose"]:
        ok = int((result.frame["status"] == "ok").sum()) if len(result.frame) else 0
        print(f"sweep interrupted: kept {ok} finished rows in {run_folder}; run the same sweep with "
              f"folder={str(run_folder)!r} to resume", flush=True)
    return result
