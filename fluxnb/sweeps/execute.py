"""Running a prepared sweep: :class:`SweepRun`, one task per pending cell, bounded concurrency.

Each cell is submitted (or re-attached to the job a previous run left queued), followed with the
client's own ``wait(job, timeout=...)`` (which cancels the job on the server at the timeout and
raises JobTimeoutError, and cancels it when the task is cancelled), then its images are saved,
hashed, measured, cached and logged by one disk thread. A failing cell becomes a row with its
error; the sweep goes on. Cancelling the run cancels every job still queued or running on the
server (once each) and logs those cells as ``cancelled``.

A concurrency slot covers a job's time on the server only: it is given back the moment the job
is seen COMPLETED, so the next cell is submitted while this one's result is fetched.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import io
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import JobCancelledError, JobFailedError, JobTimeoutError, QueueHTTPError, ValidationError
from ..params_meta import build_metadata, embed_metadata
from ..protocol import Completed, InProgress
from .cache import cache_key
from .metrics import METRICS, inpaint_metrics
from .options import Progress
from .plan import Cell
from .prepare import Prepared, cell_row, error_text, image_name, new_attempt, now, short_url, suffix_for

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ..client import AsyncJob, AsyncQueueClient, InpaintResult
    from .journal import SweepJournal

__all__ = ["CANCEL_TIMEOUT", "SweepRun"]

#: Seconds to wait for the server to acknowledge each cancel when a sweep is stopped.
CANCEL_TIMEOUT = 5.0

T = TypeVar("T")
_UNASKED = object()


class _Slot:
    """One of the run's concurrency slots, released at most once (early, on COMPLETED)."""

    def __init__(self, semaphore: asyncio.Semaphore):
        self._semaphore = semaphore
        self._held = False

    async def __aenter__(self) -> _Slot:
        await self._semaphore.acquire()
        self._held = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()


@dataclass
class _Attempt:
    """One try at one cell: its row's first columns, its job, what it was doing, its clock."""

    cell: Cell
    base: dict[str, Any]
    job: AsyncJob | None = None
    phase: str = "submit"
    t0: float = field(default_factory=time.perf_counter)
    started: float | None = None  # first IN_PROGRESS seen
    entry: Any = None  # its run-journal entry (a RunEntry) when the sweep records

    def restart(self) -> None:
        self.job, self.phase, self.t0, self.started = None, "submit", time.perf_counter(), None


class SweepRun:
    """The pending cells of ``prep`` on ``aclient``: :meth:`run` them all, or cancel them all."""

    def __init__(self, prep: Prepared, aclient: AsyncQueueClient, *, concurrency: int,
                 timeout: float | None, progress: Progress | None = None,
                 journal: SweepJournal | None = None):
        self.prep, self.aclient, self.timeout, self.progress = prep, aclient, timeout, progress
        self.journal = journal  # records each cell that ran in the run journal (None: not)
        self._semaphore = asyncio.Semaphore(concurrency)
        #: cells whose job is queued or running, by key
        self._inflight: dict[str, tuple[Cell, AsyncJob]] = {}
        #: submits whose answer has not arrived (it goes on when the task is cancelled)
        self._submitting: dict[asyncio.Future[AsyncJob], Cell] = {}
        #: jobs the client cancelled on the way out of ``wait``: key -> (cell, job, its answer)
        self._cancelled: dict[str, tuple[Cell, AsyncJob, str | None]] = {}
        self._decoded: dict[str, Image.Image] = {}
        self._lock = threading.Lock()
        # One thread saves, measures and logs finished jobs, in order. A pool of them would fight
        # the event loop for the GIL and delay the next submit by a switch interval (5 ms) at a time.
        self._disk = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fluxnb-sweep-io")

    async def run(self) -> None:
        """Every pending cell; on cancellation (or any error) cancel what is left on the server."""
        tasks = [asyncio.ensure_future(self.run_cell(cell)) for cell in self.prep.pending]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                # once: gather has cancelled them already when this task was cancelled, and a
                # second cancel would break into the client's own (shielded) cancel on the server
                if not task.done() and not task.cancelling():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.cancel_all()
            raise
        finally:
            self._disk.shutdown(wait=True)  # every finished row is on disk before the run returns

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._disk, functools.partial(fn, *args))

    async def run_cell(self, cell: Cell) -> None:
        """Submit (or re-attach), wait, fetch the images, then :meth:`finish`; or log the failure."""
        attempt = _Attempt(cell, cell_row(cell, new_attempt()))
        try:
            async with _Slot(self._semaphore) as slot:
                attempt.restart()
                if self.journal is not None:
                    attempt.entry = self.journal.begin(cell)
                result = None
                old = self.prep.reattach.get(cell.key)
                if old is not None:
                    result = await self.reattach(attempt, old)
                if result is None:
                    attempt.job = await self.submit(cell)
                    attempt.phase = "wait"
                    result = await self.wait(attempt, slot)
            blobs = await result.aimage_bytes()
        except asyncio.CancelledError as exc:
            if self.journal is not None:  # one small local write, then the cancel goes on
                self.journal.finish(attempt.entry, job=attempt.job, error=exc)
            raise
        except Exception as exc:  # noqa: BLE001 - a failing cell is a row, not the end
            await self.fail(attempt, exc)
            return
        await self.finish(attempt, result, blobs, time.perf_counter())

    async def submit(self, cell: Cell) -> AsyncJob:
        """Queue ``cell``'s job and log its request id before anything else can happen."""
        task = asyncio.ensure_future(self.aclient.submit(cell.inputs))
        self._submitting[task] = cell
        # cancelled here, the submit goes on: cancel_all waits for its request id (even when it
        # is already answered) and cancels the job it created
        job = await asyncio.shield(task)
        self._submitting.pop(task, None)
        self._inflight[cell.key] = (cell, job)
        # written (not yet fsync'd: the next row does that) so that a resumed sweep re-attaches
        # to this job instead of submitting the cell again
        self.prep.log.append([{"kind": "submitted", "key": cell.key, "cell": cell.index,
                               "request_id": job.request_id, "at": now()}], sync=False)
        return job

    async def reattach(self, attempt: _Attempt, request_id: str) -> InpaintResult | None:
        """The result of the job a previous run left for this cell; None when the server no longer
        knows it or it was cancelled (then the cell is submitted afresh, in the same slot)."""
        attempt.job, attempt.phase = self.aclient.job(request_id), "wait"
        try:
            return await self.wait(attempt, None)
        except QueueHTTPError as exc:
            if exc.status_code != 404:
                raise
        except JobCancelledError:
            pass
        attempt.restart()
        return None

    async def wait(self, attempt: _Attempt, slot: _Slot | None) -> InpaintResult:
        """The job's result through the client's ``wait`` (timeout -> cancelled, JobTimeoutError);
        ``slot`` is released as soon as the job is seen COMPLETED."""
        cell, job = attempt.cell, attempt.job
        assert job is not None
        self._inflight[cell.key] = (cell, job)

        def on_update(status: object) -> None:
            if isinstance(status, InProgress) and attempt.started is None:
                attempt.started = time.perf_counter()
            elif isinstance(status, Completed) and slot is not None:
                slot.release()  # the next cell goes while this result is fetched

        try:
            result = await self.aclient.wait(job, timeout=self.timeout, on_update=on_update, logs=False)
        except asyncio.CancelledError as exc:
            outcome = getattr(exc, "cancel_outcome", _UNASKED)
            if outcome is not _UNASKED:  # the client asked the server (None: no answer)
                self._inflight.pop(cell.key, None)
                self._cancelled[cell.key] = (cell, job, None if outcome is None else str(outcome))
            raise
        except BaseException:
            self._inflight.pop(cell.key, None)
            raise
        self._inflight.pop(cell.key, None)
        return result

    async def fail(self, attempt: _Attempt, exc: Exception) -> None:
        """Log the cell's failure as one row (its phase says where it failed)."""
        phase = attempt.phase
        if isinstance(exc, JobTimeoutError):
            phase = "timeout"
        elif isinstance(exc, JobFailedError):
            phase = "job"
        elif isinstance(exc, ValidationError):
            phase = "submit"
        row = {**attempt.base, "status": "error", "error": error_text(exc), "phase": phase,
               "request_id": getattr(attempt.job, "request_id", None) or getattr(exc, "request_id", None),
               "image_index": None, "total_s": round(time.perf_counter() - attempt.t0, 4),
               "cached": False, "finished_at": now()}
        await self._off_loop(self.prep.log.append, [row])
        if self.journal is not None:
            await self._off_loop(functools.partial(self.journal.finish, attempt.entry,
                                                   job=attempt.job, error=exc))
        self._progress(row)

    async def finish(self, attempt: _Attempt, result: InpaintResult, blobs: list[bytes],
                     done_at: float) -> None:
        """Time the job, then save, measure, cache and log its images on the disk thread."""
        base = {**attempt.base, **_timings(attempt, result, done_at)}
        urls = [image.url for image in result.images]
        # the job's parameters inside each image (fluxnb.read_params reads them back)
        meta = build_metadata(attempt.cell.inputs, seed=result.seed if result.seed is not None
                              else attempt.cell.seed, engine=result.engine, backend=self.prep.backend)
        try:
            rows = await self._off_loop(self._save, attempt.cell, blobs, base, urls, meta)
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the job is kept on the server
            rows = [{**base, "status": "error", "error": f"saving the result: {error_text(exc)}",
                     "phase": "wait", "image_index": None}]
            await self._off_loop(self.prep.log.append, rows)
            if self.journal is not None:
                await self._off_loop(functools.partial(self.journal.finish, attempt.entry,
                                                       job=attempt.job, error=exc))
        else:
            if self.journal is not None:
                files = [r["file"] for r in rows if r.get("file")]
                await self._off_loop(functools.partial(self.journal.finish, attempt.entry,
                                                       job=attempt.job, result=result,
                                                       outputs=files))
        self._progress(rows[0] if rows else None)

    def _progress(self, row: dict[str, Any] | None) -> None:
        if self.progress is not None:
            self.progress.update(row)

    async def cancel_all(self) -> None:
        """Cancel every job still queued or running (once each), and log those cells as cancelled."""
        jobs = dict(self._inflight)
        if self._submitting:  # a submit whose answer had not arrived: wait briefly for its request id
            await asyncio.wait(list(self._submitting), timeout=CANCEL_TIMEOUT)
            for future, cell in self._submitting.items():
                if future.done() and not future.cancelled() and future.exception() is None:
                    jobs.setdefault(cell.key, (cell, future.result()))
        # the jobs the client cancelled itself (one request each): logged with its answer
        rows = [_cancelled_row(cell, job, outcome or "cancel failed or unanswered")
                for key, (cell, job, outcome) in self._cancelled.items() if key not in jobs]

        async def cancel(cell: Cell, job: AsyncJob) -> dict[str, Any]:
            try:
                outcome = await asyncio.wait_for(self.aclient.cancel(job), CANCEL_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - best effort: say what happened in the row
                outcome = f"cancel failed: {error_text(exc)}"
            return _cancelled_row(cell, job, outcome)

        rows += await asyncio.gather(*(cancel(cell, job) for cell, job in jobs.values()))
        await self._off_loop(self.prep.log.append, rows)

    # -- on the disk thread ------------------------------------------------------------------

    def _save(self, cell: Cell, blobs: list[bytes], base: dict[str, Any],
              urls: list[str], meta: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Save, hash and measure the images, cache the job when every image is fine, log its rows."""
        rows, files = [], {}
        if meta is not None:
            blobs = [embed_metadata(blob, meta) for blob in blobs]
        for i, blob in enumerate(blobs):
            row, path = self._image_row(cell, i, blob, base, urls[i] if i < len(urls) else None)
            files[str(row["sha256"])] = path
            rows.append(row)
        cache = self.prep.cache
        if cache is not None and rows and all(r["status"] == "ok" for r in rows):
            stored = [{k: v for k, v in r.items() if k not in ("kind", "file")}
                      | {"file": Path(str(r["file"])).name} for r in rows]
            cache.put(cache_key(cell.key, backend=self.prep.backend), stored, files)
        self.prep.log.append(rows)
        return rows

    def _image_row(self, cell: Cell, i: int, blob: bytes, base: dict[str, Any],
                   url: str | None) -> tuple[dict[str, Any], Path]:
        from PIL import Image

        digest = hashlib.sha256(blob).hexdigest()
        path = self.prep.log.images / image_name(cell, i, f"x.{suffix_for(blob)}")
        path.write_bytes(blob)
        row = {**base, "image_index": i, "url": short_url(url) if url is not None else None,
               "file": str(path), "bytes": len(blob), "sha256": digest}
        try:
            with Image.open(io.BytesIO(blob)) as img:
                img.load()
                row["width"], row["height"] = img.size
                inputs = self._before_and_mask(cell)
                if inputs is not None:
                    row.update(inpaint_metrics(inputs[0], inputs[1], img))
        except Exception as exc:  # noqa: BLE001 - an unreadable image is a row with an error
            row["status"], row["error"] = "error", f"output image {i} unreadable: {error_text(exc)}"
        for name in METRICS:
            row.setdefault(name, math.nan)
        return row, path

    def _before_and_mask(self, cell: Cell) -> tuple[Image.Image, Image.Image] | None:
        """The cell's input image and mask, decoded once per sweep; None if either is a URL."""
        from PIL import Image

        out = []
        for name, mode in (("image_url", "RGB"), ("mask_url", "L")):
            image = cell.images.get(name)
            if image is None or image.data is None:
                return None
            with self._lock:
                decoded = self._decoded.get(image.digest)
                if decoded is None:
                    decoded = Image.open(io.BytesIO(image.data)).convert(mode)
                    self._decoded[image.digest] = decoded
            out.append(decoded)
        return out[0], out[1]


def _timings(attempt: _Attempt, result: InpaintResult, done_at: float) -> dict[str, Any]:
    """The ok columns of a finished job: request id, seed, queue / inference / total seconds."""
    total = done_at - attempt.t0
    inference = result.timings.get("inference")
    if inference is None:
        inference = result.metrics.get("inference_time")
    queue = (attempt.started - attempt.t0) if attempt.started is not None else (
        max(0.0, total - float(inference)) if inference is not None else None)
    seed = result.seed if result.seed is not None else attempt.cell.seed
    request_id = attempt.job.request_id if attempt.job is not None else None
    return {"status": "ok", "error": None, "request_id": request_id, "seed": seed,
            "queue_s": None if queue is None else round(queue, 4),
            "inference_s": None if inference is None else round(float(inference), 4),
            "total_s": round(total, 4), "cached": False, "finished_at": now()}


def _cancelled_row(cell: Cell, job: AsyncJob, outcome: str) -> dict[str, Any]:
    return {**cell_row(cell, new_attempt()), "status": "cancelled",
            "error": f"sweep cancelled ({outcome})", "phase": "cancelled",
            "request_id": job.request_id, "cached": False, "finished_at": now()}
