"""The async client: :class:`AsyncQueueClient` and its handle :class:`AsyncJob`.

The same names as :mod:`fluxnb.client._sync`, as coroutines (``stream_status`` an async
iterator); callbacks may be sync or async. One connection pool per event loop (see the class).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

import httpx

from ..datauri import decode_data_uri
from ..errors import FluxnbError, JobTimeoutError, TransportError
from ..protocol import Completed, LogEntry, Status
from . import _follow
from ._base import JobHandle, _BaseClient
from ._download import download, download_async, get_once
from ._follow import Deadline, StreamSilent, StreamUnavailable, Tracker
from ._inputs import file_name, needs_encoding
from ._pools import LoopPools, loop_errors
from ._record import job_record
from ._responses import error_for_response, extra_submit_headers, log_path, retry_delay, strip_query
from .journal import begin_run
from .result import InpaintResult
from .sse import SSEParser
from .uploads import AsyncFalStorage

if TYPE_CHECKING:  # pragma: no cover - the sync twin, for clone()'s return type only
    from ._sync import QueueClient

__all__ = ["AsyncJob", "AsyncQueueClient"]

log = logging.getLogger("fluxnb.client")

T = TypeVar("T")
#: A callback ``wait``/``run`` call with each status (or the job): sync, or a coroutine function.
Callback = Callable[[T], object] | Callable[[T], Awaitable[object]]


@dataclass(frozen=True)
class AsyncJob(JobHandle):
    """The async twin of :class:`~fluxnb.client.Job`: the same fields; the methods are coroutines
    (``stream`` an async iterator)."""

    client: AsyncQueueClient | None = field(default=None, repr=False, compare=False)
    #: What was sent (parameters, input sha256s, backend) for the images' metadata; never a key.
    record: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def _client(self) -> AsyncQueueClient:
        if self.client is None:
            raise RuntimeError("this AsyncJob has no client; use client.job(request_id)")
        return self.client

    async def status(self, logs: bool = False) -> Status:
        return await self._client().status(self, logs=logs)

    def stream(self, logs: bool = True) -> AsyncIterator[Status]:
        return self._client().stream_status(self, logs=logs)

    async def result(self) -> InpaintResult:
        return await self._client().result(self)

    async def cancel(self) -> str:
        return await self._client().cancel(self)

    async def wait(self, timeout: float | None = None, on_update: Callback[Status] | None = None,
                   *, logs: bool | None = None) -> InpaintResult:
        return await self._client().wait(self, timeout=timeout, on_update=on_update, logs=logs)


async def _call(callback: Callback[T] | None, value: T) -> None:
    if callback is not None:
        outcome = callback(value)
        if inspect.isawaitable(outcome):
            await outcome


class AsyncQueueClient(_BaseClient[AsyncJob]):
    """The async twin of :class:`~fluxnb.client.QueueClient`: same arguments, same method names;
    the methods are coroutines, ``stream_status`` is an async iterator, and callbacks may be sync
    or async.

    **Event loops.** Connections belong to the event loop that opened them, so the client keeps
    one connection pool per loop, made on first use in that loop and closed when the loop ends
    (``asyncio.run`` returning) or on :meth:`aclose`: one client may be used from the kernel's
    loop, a panel's loop thread and ``asyncio.run`` alike. A ``transport=`` you pass is shared by
    every loop instead; a loop-bound one used from a second loop raises
    :class:`~fluxnb.errors.EventLoopError` (make one client, with its own transport, per loop).
    """

    _asynchronous = True

    def _open(self) -> None:
        if self._transport is not None and not isinstance(self._transport, httpx.AsyncBaseTransport):
            raise TypeError("transport= must be an httpx.AsyncBaseTransport, not "
                            f"{type(self._transport).__name__}")
        #: One httpx.AsyncClient per event loop (see the class docstring and ``_pools``).
        self._pools = LoopPools(self._new_pool, shared=self._transport is not None)
        import anyio

        #: The sleep used between retries and polls; tests replace it to record delays.
        self._sleep: Callable[[float], Awaitable[object]] = anyio.sleep
        self._storage = AsyncFalStorage(self._send, key=self._key, rest_url=self.rest_url,
                                        cdn_url=self.cdn_url)

    def _make_job(self, request_id: str, response_url: str, status_url: str,
                  cancel_url: str) -> AsyncJob:
        return AsyncJob(request_id, response_url, status_url, cancel_url, client=self)

    @overload
    def clone(self, *, asynchronous: Literal[True] | None = None) -> AsyncQueueClient: ...
    @overload
    def clone(self, *, asynchronous: Literal[False]) -> QueueClient: ...
    @overload
    def clone(self, *, asynchronous: bool | None = None) -> QueueClient | AsyncQueueClient: ...

    def clone(self, *, asynchronous: bool | None = None) -> QueueClient | AsyncQueueClient:
        """A new client with this one's settings and key, with its own connections: async or sync
        (default: the same flavour). One async client already works from several event loops
        (one pool per loop); a clone is for independent settings, or a sync twin."""
        return cast("QueueClient | AsyncQueueClient", self._clone(asynchronous))

    async def __aenter__(self) -> AsyncQueueClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pools (of every event loop that used this client)."""
        await self._pools.aclose()

    def _async_transport(self) -> httpx.AsyncBaseTransport | None:
        return self._transport if isinstance(self._transport, httpx.AsyncBaseTransport) else None

    def _new_pool(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self._async_transport(), **self._new_http_kwargs())

    @property
    def _http(self) -> httpx.AsyncClient:
        """The connection pool of the running event loop (see the class docstring)."""
        return self._pools.current()

    async def _send(self, method: str, url: str, *, idempotent: bool = True,
                    headers: Mapping[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """One request with retries; returns the last response (whatever its status)."""
        path = log_path(url)
        attempt = 0
        while True:
            attempt += 1
            try:
                with loop_errors():
                    response = await self._http.request(method, url,
                                                        headers=self._headers_for(url, headers),
                                                        **kwargs)
            except httpx.TransportError as exc:
                delay = retry_delay(attempt, self.max_retries, exc=exc, idempotent=idempotent)
                if delay is None:
                    raise TransportError(
                        f"{method} {strip_query(url)} failed after {attempt} attempt(s): "
                        f"{type(exc).__name__}: {exc}", url=strip_query(url), attempts=attempt,
                    ) from exc
                log.debug("%s %s: %s (attempt %d); retrying in %.2f s", method, path,
                          type(exc).__name__, attempt, delay)
                await self._sleep(delay)
                continue
            log.debug("%s %s -> %d (attempt %d)", method, path, response.status_code, attempt)
            if response.status_code >= 400:
                delay = retry_delay(attempt, self.max_retries, response=response)
                if delay is not None:
                    await response.aclose()
                    log.debug("%s %s: retrying in %.2f s", method, path, delay)
                    await self._sleep(delay)
                    continue
            return response

    # -- the API -----------------------------------------------------------------------------

    async def submit(self, inputs: Mapping[str, Any] | None = None, /, *,
                     webhook_url: str | None = None, priority: str | None = None,
                     hint: str | None = None, start_timeout: float | None = None,
                     headers: Mapping[str, str] | None = None, **fields: Any) -> AsyncJob:
        """Queue a job; returns its handle. See :meth:`QueueClient.submit`."""
        if needs_encoding(inputs, fields):
            # PNG encoding and file reads are blocking work: keep them off the event loop
            import anyio.to_thread

            body, pending = await anyio.to_thread.run_sync(self._prepare, inputs, fields)
        else:
            body, pending = self._prepare(inputs, fields)
        record = job_record(body, pending, base_url=self.base_url, is_fal=self.is_fal)
        extra = extra_submit_headers(priority=priority, hint=hint, start_timeout=start_timeout,
                                     headers=headers)
        for name, (data, mime) in pending.items():
            body[name] = await self._storage.upload(data, mime, file_name(name, mime))
        params = {"fal_webhook": webhook_url} if webhook_url else None
        response = await self._send("POST", self._submit_url(), idempotent=False, json=body,
                                    params=params,
                                    headers={"Content-Type": "application/json", **extra})
        return replace(self._job_from_submit(response), record=record)

    async def status(self, job: JobHandle | str, *, logs: bool = False) -> Status:
        """See :meth:`QueueClient.status`."""
        handle = self._as_job(job)
        response = await self._send("GET", handle.status_url, params={"logs": "1" if logs else "0"})
        return self._status_from(response, handle)

    def stream_status(self, job: JobHandle | str, *, logs: bool = True) -> AsyncIterator[Status]:
        """See :meth:`QueueClient.stream_status`; an async iterator."""
        return self._follow(self._as_job(job), logs=logs, deadline=None)

    async def result(self, job: JobHandle | str) -> InpaintResult:
        """See :meth:`QueueClient.result`."""
        handle = self._as_job(job)
        return self._result_from(await self._send("GET", handle.response_url), handle).with_record(
            getattr(handle, "record", None))

    async def cancel(self, job: JobHandle | str) -> str:
        """See :meth:`QueueClient.cancel`."""
        handle = self._as_job(job)
        return self._cancel_from(await self._send("PUT", handle.cancel_url), handle)

    async def wait(self, job: JobHandle | str, *, timeout: float | None = None,
                   on_update: Callback[Status] | None = None,
                   logs: bool | None = None) -> InpaintResult:
        """See :meth:`QueueClient.wait` (THE wait-with-timeout-and-cancel primitive: at the
        timeout the job is cancelled and JobTimeoutError raised; cancelling the task cancels the
        job too); ``on_update`` may be a coroutine function."""
        deadline = _follow.deadline_after(timeout)
        handle = self._as_job(job)
        async with self._cancel_on_interrupt(handle):
            result = await self._wait(handle, timeout, deadline, on_update, logs)
            return result.with_record(getattr(handle, "record", None))

    async def run(self, inputs: Mapping[str, Any] | None = None, /, *,
                  timeout: float | None = None, on_update: Callback[Status] | None = None,
                  on_enqueue: Callback[AsyncJob] | None = None, logs: bool | None = None,
                  webhook_url: str | None = None, priority: str | None = None,
                  hint: str | None = None, start_timeout: float | None = None,
                  headers: Mapping[str, str] | None = None, **fields: Any) -> InpaintResult:
        """See :meth:`QueueClient.run`; callbacks may be coroutine functions. Cancelling the task
        (like a KeyboardInterrupt) after the submit cancels the job on the server; the
        CancelledError goes on with a note naming the request id."""
        deadline = _follow.deadline_after(timeout)
        entry = begin_run(self, inputs, fields)
        job = None
        try:
            job = await self.submit(inputs, webhook_url=webhook_url, priority=priority, hint=hint,
                                    start_timeout=start_timeout, headers=headers, **fields)
            async with self._cancel_on_interrupt(job):
                await _call(on_enqueue, job)
                result = (await self._wait(job, timeout, deadline, on_update, logs)
                          ).with_record(job.record)
        except BaseException as exc:
            if entry is not None and job is not None:  # refused before sending: not a run
                entry.finish(job=job, error=exc)
            raise
        if entry is not None:
            entry.finish(job=job, result=result)
        return result

    # -- following a job ---------------------------------------------------------------------

    async def _wait(self, job: JobHandle, timeout: float | None, deadline: float | None,
                    on_update: Callback[Status] | None, logs: bool | None) -> InpaintResult:
        seen = Tracker()
        streamed = _follow.streams_logs(logs, on_update)
        follow = self._follow(job, logs=streamed, deadline=deadline)
        try:
            async for status in follow:
                await _call(on_update, status)
                if seen.see(status):
                    break
        except Deadline:
            await follow.aclose()
            cancelled = await self._cancel_quietly(job)
            raise JobTimeoutError(job.request_id, float(timeout or 0), cancelled=cancelled) from None
        finally:
            await follow.aclose()
        later = None if streamed or logs is False else functools.partial(self._logs_once, job)
        return self._result_from(await self._send("GET", job.response_url), job,
                                 logs=seen.logs if streamed else None, metrics=seen.metrics,
                                 fetch_logs=later)

    @contextlib.asynccontextmanager
    async def _cancel_on_interrupt(self, job: JobHandle) -> AsyncIterator[None]:
        """Task cancellation (or a KeyboardInterrupt) inside cancels ``job`` on the server, shielded
        and with one short try, then goes on with a note naming the request id."""
        import anyio

        try:
            yield
        except BaseException as exc:
            if not isinstance(exc, (KeyboardInterrupt, anyio.get_cancelled_exc_class())):
                raise
            with anyio.CancelScope(shield=True):
                outcome = await self._cancel_now(job)
            _follow.note_interrupt(exc, job.request_id, outcome)
            raise

    async def _cancel_now(self, job: JobHandle) -> str | None:
        """See :meth:`QueueClient._cancel_now`."""
        try:
            response = await self._http.request("PUT", job.cancel_url,
                                                headers=self._headers_for(job.cancel_url),
                                                timeout=_follow.INTERRUPT_CANCEL_TIMEOUT)
            return self._cancel_from(response, job)
        except Exception as exc:
            log.debug("cancel after an interrupt failed for %s: %s", job.request_id, type(exc).__name__)
            return None

    async def _cancel_quietly(self, job: JobHandle) -> bool:
        try:
            outcome = await self.cancel(job)
        except FluxnbError as exc:
            log.debug("cancel after timeout failed for %s: %s", job.request_id, type(exc).__name__)
            return False
        log.debug("cancel of %s after its timeout: %s", job.request_id, outcome)
        return outcome != "ALREADY_COMPLETED"  # it finished just as time ran out

    async def _follow(self, job: JobHandle, *, logs: bool, deadline: float | None
                      ) -> AsyncGenerator[Status, None]:
        while self._stream_ok:
            try:
                async with contextlib.aclosing(self._stream(job, logs=logs, deadline=deadline)) \
                        as events:
                    async for status in events:
                        yield status
                        if isinstance(status, Completed):
                            return
            except StreamSilent:
                continue
            except StreamUnavailable:
                break
        while True:
            _follow.check_deadline(deadline)
            status = await self.status(job, logs=logs)
            yield status
            if isinstance(status, Completed):
                return
            await self._sleep(_follow.poll_wait(self.poll_interval, deadline))

    async def _stream(self, job: JobHandle, *, logs: bool, deadline: float | None
                      ) -> AsyncGenerator[Status, None]:
        url, request = self._stream_request(job, logs, deadline)
        read_timeout = request["timeout"].read
        try:
            with loop_errors():
                async with self._http.stream("GET", url, **request) as response:
                    self._stream_opened(response)
                    parser = SSEParser()
                    achunks = response.aiter_text()
                    async for chunk in achunks:
                        for event in parser.feed(chunk):
                            status = _follow.event_status(event)
                            if status is None:
                                continue
                            if isinstance(status, Completed):
                                await _follow.adrain(achunks)
                                yield status
                                return
                            yield status
                        _follow.check_stream_deadline(deadline, read_timeout)  # after keep-alives
        except httpx.TimeoutException:
            _follow.check_deadline(deadline)
            raise (StreamSilent if deadline is not None else StreamUnavailable) from None
        except httpx.TransportError as exc:
            log.debug("status stream of %s broke (%s); polling", job.request_id, type(exc).__name__)
            raise StreamUnavailable from None
        _follow.check_deadline(deadline)
        raise StreamUnavailable

    # -- results ---------------------------------------------------------------------------

    def _logs_once(self, job: JobHandle) -> list[LogEntry] | None:
        """The finished job's log lines for ``result.logs`` (a sync attribute): one status GET
        through a short-lived sync pool, as ``result.pil_images()`` downloads."""
        transport = self._transport if isinstance(self._transport, httpx.BaseTransport) else None
        response = get_once(job.status_url, params={"logs": "1"}, transport=transport,
                            http_kwargs=self._new_http_kwargs(),
                            headers=self._headers_for(job.status_url))
        return _follow.logs_of(self._status_from(response, job))

    def _fetch_sync(self, url: str) -> bytes:
        """For ``result.pil_images()`` (sync) on this client's result: a short-lived sync pool."""
        if url.startswith("data:"):
            return decode_data_uri(url)[1]
        transport = self._transport if isinstance(self._transport, httpx.BaseTransport) else None
        return download(url, transport=transport, http_kwargs=self._new_http_kwargs(),
                        headers=self._headers_for(url))

    async def _fetch_async(self, url: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_uri(url)[1]
        if self._http.is_closed:
            return await download_async(url, transport=self._async_transport(),
                                        http_kwargs=self._new_http_kwargs(),
                                        headers=self._headers_for(url))
        response = await self._send("GET", url, follow_redirects=True)
        if response.status_code >= 400:
            raise error_for_response(response)
        return response.content
