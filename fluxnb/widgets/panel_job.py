"""The panel's Run / Cancel controller: one job at a time over any client, no widgets.

:class:`PanelJob` owns the client (made with ``fluxnb.connect(asynchronous=True)`` on first use
when none was given), the task of the job running now and, in a script, the loop thread it runs
on. What happens is told to a :class:`JobListener` (the panel's view is one; a test's recorder is
another), so the controller is driven and tested without ipywidgets.

Loops: with an event loop running in the calling thread (a notebook cell) the job is a task on
that loop; without one (a script) it is a task on the controller's own
:class:`~fluxnb._aio.BackgroundLoop`, started on first use and stopped by :meth:`PanelJob.close`.
Cancelling the task cancels the job on the server too; a client the controller made is closed
by :meth:`PanelJob.close` after any cancelled job has finished its cleanup.

>>> jobs = PanelJob(client)                                         # doctest: +SKIP
>>> result = jobs.run(params, image, mask, JobListener())           # a script  # doctest: +SKIP
>>> result = await jobs.arun(params, image, mask, JobListener())    # a notebook  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

from PIL import Image

from .._aio import BackgroundLoop, run_blocking, wait_future
from ..protocol import Status
from ..result import InpaintResult

__all__ = ["JobListener", "PanelJob", "TaskLike"]

log = logging.getLogger("fluxnb.panel")

TaskLike = asyncio.Task[Any] | concurrent.futures.Future[Any]


class JobListener:
    """What a :class:`PanelJob` reports, in order: ``on_enqueue`` and ``on_update`` while the
    job runs, then one of ``on_result`` / ``on_cancelled`` / ``on_failed``, then ``on_finished``.
    Every method is a no-op here; a view overrides what it shows."""

    def on_update(self, status: Status) -> None:
        """A status from the server (queued with a position, in progress with logs)."""

    def on_enqueue(self, job: Any) -> None:
        """The job was submitted (``job.request_id`` is known)."""

    async def on_result(self, result: InpaintResult, outputs: list[Image.Image]) -> None:
        """The job completed; ``outputs`` are its images, already downloaded."""

    def on_cancelled(self, outcome: str | None) -> None:
        """The job was cancelled; ``outcome`` is the server's answer (``NOT_SUBMITTED`` when
        nothing had been sent, ``ERROR`` when asking the server failed)."""

    def on_cancel_error(self, exc: BaseException) -> None:
        """Asking the server to cancel failed (the job is cancelled here all the same)."""

    def on_failed(self, exc: BaseException) -> None:
        """The job failed (validation, HTTP, the job itself); the task raises ``exc``."""

    def on_finished(self) -> None:
        """The job is over, whichever way (called last)."""

    def recording(self, client: Any) -> contextlib.AbstractContextManager[object]:
        """The run journal's setting around ``client.run`` (none here: the client's own)."""
        return contextlib.nullcontext()


def _require_no_loop(hint: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"an event loop is running here (a notebook?): use {hint}")


async def _close_after(task: TaskLike | None, client: Any) -> None:
    """Close ``client`` once ``task`` (cancelled, cancelling the job on the server) is done."""
    if isinstance(task, asyncio.Task) and not task.done():
        await asyncio.wait([task])
    await client.aclose()


class PanelJob:
    """Runs one inpainting job at a time on ``client`` (an ``AsyncQueueClient``, a ``QueueClient``,
    or None for ``connect()`` on first use; ``connect`` overrides how that client is made)."""

    def __init__(self, client: Any = None, *, connect: Callable[[], Any] | None = None):
        self._client = client
        self._connect = connect
        self._own_client = False
        self.task: TaskLike | None = None
        #: The job of the current (or last) run once it was submitted.
        self.job: Any = None
        #: The result of the last completed run.
        self.result: InpaintResult | None = None
        #: The server's answer to the last cancel (``CANCELLATION_REQUESTED``, ``ALREADY_COMPLETED``,
        #: ``NOT_SUBMITTED``, ``ERROR``), or None.
        self.cancel_outcome: str | None = None
        self._background: BackgroundLoop | None = None
        self._closing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"PanelJob({'running' if self.running else 'idle'}, client={self._client!r})"

    @property
    def client(self) -> Any:
        """The client (None until the first run when none was given)."""
        return self._client

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self, params: dict[str, Any], image: Image.Image, mask: Image.Image,
              listener: JobListener) -> TaskLike:
        """Schedule the job (``params`` plus the images) and return its task at once: an
        ``asyncio.Task`` on the running loop, else a future on the controller's loop thread."""
        if self.running:
            raise RuntimeError("a job is already running: wait for it or click Cancel")
        self.job = None
        self.cancel_outcome = None
        coro = self._job(params, image, mask, listener)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        task: TaskLike
        if loop is not None:
            task = loop.create_task(coro)
        else:
            if self._background is None:
                self._background = BackgroundLoop(name="fluxnb-panel-loop")
            task = self._background.submit(coro)
        self.task = task
        return task

    async def arun(self, params: dict[str, Any], image: Image.Image, mask: Image.Image,
                   listener: JobListener) -> InpaintResult | None:
        """:meth:`start` and wait: the result, or None when the job was cancelled."""
        return await self.wait(self.start(params, image, mask, listener))

    @staticmethod
    async def wait(task: TaskLike) -> InpaintResult | None:
        """Wait for a task :meth:`start` returned: its result, or None when it was cancelled
        (cancelling the waiter itself still raises CancelledError)."""
        try:
            if isinstance(task, asyncio.Task):
                done: InpaintResult = await task
                return done
            result: InpaintResult = await asyncio.wrap_future(task)
            return result
        except asyncio.CancelledError:
            if task.cancelled():
                return None
            raise

    def run(self, params: dict[str, Any], image: Image.Image, mask: Image.Image,
            listener: JobListener, timeout: float | None = None) -> InpaintResult | None:
        """Blocking :meth:`arun` for scripts (no loop may run in this thread). Ctrl-C cancels
        the job, on the server too, waits for that, and re-raises."""
        _require_no_loop("`await panel.arun()` or click Run")
        return self.wait_blocking(self.start(params, image, mask, listener), timeout)

    @staticmethod
    def wait_blocking(task: TaskLike, timeout: float | None = None) -> InpaintResult | None:
        """Block until a background task :meth:`start` returned is done (None: cancelled)."""
        if not isinstance(task, concurrent.futures.Future):  # pragma: no cover - a loop was running
            raise RuntimeError("expected a background-loop future")
        try:
            result: InpaintResult = wait_future(task, timeout)
            return result
        except concurrent.futures.CancelledError:
            return None

    def cancel(self) -> bool:
        """Cancel the running task (and so the job on the server); False when nothing runs."""
        task = self.task
        if task is None or task.done():
            return False
        task.cancel()
        return True

    def close(self) -> None:
        """Cancel a running job, stop the loop thread (waiting for the job's cleanup) and close
        a client the controller made."""
        if self.running and self.task is not None:
            self.task.cancel()
        client, self._client = (self._client if self._own_client else None), None
        background, self._background = self._background, None
        if background is not None:
            background.close()  # waits for a cancelled job's cleanup; closes that loop's pool
        if client is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            run_blocking(client.aclose())
        else:
            self._closing = loop.create_task(_close_after(self.task, client))

    async def _get_client(self) -> Any:
        if self._client is None:
            connect = self._connect
            if connect is None:
                from ..connect import connect as default_connect

                def connect() -> Any:
                    return default_connect(asynchronous=True)

            self._client = await asyncio.to_thread(connect)
            self._own_client = True
        return self._client

    async def _cancel_on_server(self, client: Any, listener: JobListener) -> None:
        job = self.job
        if job is None:
            self.cancel_outcome = "NOT_SUBMITTED"
            return
        try:
            if inspect.iscoroutinefunction(client.cancel):
                outcome = await client.cancel(job)
            else:
                outcome = await asyncio.to_thread(client.cancel, job)
        except Exception as exc:
            log.debug("cancelling %s on the server failed: %r", job, exc)
            self.cancel_outcome = "ERROR"
            listener.on_cancel_error(exc)
            return
        self.cancel_outcome = str(outcome)

    async def _submit_and_fetch(self, client: Any, payload: dict[str, Any],
                                listener: JobListener) -> tuple[InpaintResult, list[Image.Image]]:
        def enqueued(job: Any) -> None:
            self.job = job
            listener.on_enqueue(job)

        if inspect.iscoroutinefunction(client.run):
            with listener.recording(client):
                result: InpaintResult = await client.run(payload, on_update=listener.on_update,
                                                         on_enqueue=enqueued)
            return result, await result.apil_images()
        # a sync QueueClient: wait in a worker thread (it takes the journal's context along)
        with listener.recording(client):
            result = await asyncio.to_thread(client.run, payload, on_update=listener.on_update,
                                             on_enqueue=enqueued)
        return result, await asyncio.to_thread(result.pil_images)

    async def _job(self, params: dict[str, Any], image: Image.Image, mask: Image.Image,
                   listener: JobListener) -> InpaintResult:
        client = None
        try:
            client = await self._get_client()
            payload = {**params, "image_url": image, "mask_url": mask}
            result, outputs = await self._submit_and_fetch(client, payload, listener)
            result.with_inputs(image, mask, params)
            await listener.on_result(result, outputs)
            self.result = result
            return result
        except asyncio.CancelledError as exc:
            already = getattr(exc, "cancel_outcome", None)  # the async client cancelled it already
            if already is not None:
                self.cancel_outcome = str(already)
            elif client is not None:
                await self._cancel_on_server(client, listener)
            listener.on_cancelled(self.cancel_outcome)
            raise
        except Exception as exc:
            listener.on_failed(exc)
            raise
        finally:
            listener.on_finished()
