"""The sync client: :class:`QueueClient` and its handle :class:`Job`.

Sends with retries, follows a job (the SSE status stream, else polling), waits with a timeout
that cancels the job on the server, and runs (submit + wait). Everything without I/O is in
``_base`` and ``_follow``; :mod:`fluxnb.client._async` is the same, with ``await``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import httpx

from ..datauri import decode_data_uri
from ..errors import FluxnbError, JobTimeoutError, TransportError
from ..protocol import Completed, LogEntry, Status
from . import _follow
from ._base import JobHandle, _BaseClient
from ._download import download, get_once
from ._follow import Deadline, StreamSilent, StreamUnavailable, Tracker
from ._inputs import file_name
from ._record import job_record
from ._responses import error_for_response, extra_submit_headers, log_path, retry_delay, strip_query
from .journal import begin_run
from .result import InpaintResult
from .sse import SSEParser
from .uploads import FalStorage

if TYPE_CHECKING:  # pragma: no cover - the async twin, for clone()'s return type only
    from ._async import AsyncQueueClient

__all__ = ["Job", "QueueClient"]

log = logging.getLogger("fluxnb.client")


@dataclass(frozen=True)
class Job(JobHandle):
    """A submitted request: its id and the URLs the server returned for it.

    Two handles are equal when their id and URLs are, so ``client.job(id) == client.submit(...)``
    holds for a fal-conformant server. The methods delegate to the client that made the handle.
    """

    client: QueueClient | None = field(default=None, repr=False, compare=False)
    #: What was sent (parameters, input sha256s, backend) for the images' metadata; never a key.
    record: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def _client(self) -> QueueClient:
        if self.client is None:
            raise RuntimeError("this Job has no client; use client.job(request_id)")
        return self.client

    def status(self, logs: bool = False) -> Status:
        return self._client().status(self, logs=logs)

    def stream(self, logs: bool = True) -> Iterator[Status]:
        return self._client().stream_status(self, logs=logs)

    def result(self) -> InpaintResult:
        return self._client().result(self)

    def cancel(self) -> str:
        return self._client().cancel(self)

    def wait(self, timeout: float | None = None, on_update: Callable[[Status], object] | None = None,
             *, logs: bool | None = None) -> InpaintResult:
        return self._client().wait(self, timeout=timeout, on_update=on_update, logs=logs)


class QueueClient(_BaseClient[Job]):
    """A client for fal's queue API (``fal-ai/flux-lora/inpainting`` by default).

    **Parameters:**

    * ``base_url``: the queue host, ``https://queue.fal.run`` or a local server's URL.
    * ``key``: the API key. ``None`` reads ``FAL_KEY`` (or ``FAL_KEY_ID``:``FAL_KEY_SECRET``) for
      fal's hosts only, and ``FLUXNB_KEY`` for any other host. It is sent as
      ``Authorization: Key …`` to the queue's own origin and never shown in reprs or errors.
    * ``app``: the fal app id. ``transport``: an ``httpx`` transport (e.g. ``MockTransport``).
    * ``timeout``: per-request seconds. ``max_retries``: retries on transport errors and
      408/409/429/502/503/504, with jittered exponential backoff honouring ``Retry-After``.
    * ``poll_interval``: seconds between status polls when the server has no SSE status stream.
    * ``upload_threshold``: input images larger than this many bytes are uploaded to fal storage
      (fal only; ``None`` never uploads). ``verify``: TLS verification, as in httpx.
    * ``journal``: the local run journal (:func:`fluxnb.journal`): True records every ``run``,
      False none (not even the panel's), None (default) only the panel's and ``fluxnb run``'s.
    """

    _asynchronous = False

    def _open(self) -> None:
        transport = self._transport
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise TypeError(f"transport= must be an httpx.BaseTransport, not {type(transport).__name__}")
        self._http = httpx.Client(transport=transport, **self._new_http_kwargs())
        #: The sleep used between retries and polls; tests replace it to record delays.
        self._sleep: Callable[[float], object] = time.sleep
        self._storage = FalStorage(self._send, key=self._key, rest_url=self.rest_url,
                                   cdn_url=self.cdn_url)

    def _make_job(self, request_id: str, response_url: str, status_url: str, cancel_url: str) -> Job:
        return Job(request_id, response_url, status_url, cancel_url, client=self)

    @overload
    def clone(self, *, asynchronous: Literal[False] | None = None) -> QueueClient: ...
    @overload
    def clone(self, *, asynchronous: Literal[True]) -> AsyncQueueClient: ...
    @overload
    def clone(self, *, asynchronous: bool | None = None) -> QueueClient | AsyncQueueClient: ...

    def clone(self, *, asynchronous: bool | None = None) -> QueueClient | AsyncQueueClient:
        """A new client with this one's settings and key, with its own connections: sync or async
        (default: the same flavour).

        >>> aclient = client.clone(asynchronous=True)     # doctest: +SKIP
        """
        return cast("QueueClient | AsyncQueueClient", self._clone(asynchronous))

    def __enter__(self) -> QueueClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(self, method: str, url: str, *, idempotent: bool = True,
              headers: Mapping[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """One request with retries; returns the last response (whatever its status)."""
        path = log_path(url)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(method, url, headers=self._headers_for(url, headers),
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
                self._sleep(delay)
                continue
            log.debug("%s %s -> %d (attempt %d)", method, path, response.status_code, attempt)
            if response.status_code >= 400:
                delay = retry_delay(attempt, self.max_retries, response=response)
                if delay is not None:
                    response.close()
                    log.debug("%s %s: retrying in %.2f s", method, path, delay)
                    self._sleep(delay)
                    continue
            return response

    # -- the API -----------------------------------------------------------------------------

    def submit(self, inputs: Mapping[str, Any] | None = None, /, *, webhook_url: str | None = None,
               priority: str | None = None, hint: str | None = None,
               start_timeout: float | None = None, headers: Mapping[str, str] | None = None,
               **fields: Any) -> Job:
        """Queue a job; returns its handle. Inputs are encoded and validated before anything is
        sent (a bad input raises ValidationError without a request)."""
        body, pending = self._prepare(inputs, fields)
        record = job_record(body, pending, base_url=self.base_url, is_fal=self.is_fal)
        extra = extra_submit_headers(priority=priority, hint=hint, start_timeout=start_timeout,
                                     headers=headers)
        for name, (data, mime) in pending.items():
            body[name] = self._storage.upload(data, mime, file_name(name, mime))
        params = {"fal_webhook": webhook_url} if webhook_url else None
        response = self._send("POST", self._submit_url(), idempotent=False, json=body,
                              params=params, headers={"Content-Type": "application/json", **extra})
        return replace(self._job_from_submit(response), record=record)

    def status(self, job: JobHandle | str, *, logs: bool = False) -> Status:
        """The job's status now: Queued, InProgress or Completed (``logs`` asks for its log lines)."""
        handle = self._as_job(job)
        response = self._send("GET", handle.status_url, params={"logs": "1" if logs else "0"})
        return self._status_from(response, handle)

    def stream_status(self, job: JobHandle | str, *, logs: bool = True) -> Iterator[Status]:
        """Statuses as they change, until Completed: the SSE stream, or polling every
        ``poll_interval`` when the server has none."""
        return self._follow(self._as_job(job), logs=logs, deadline=None)

    def result(self, job: JobHandle | str) -> InpaintResult:
        """The job's output. A job that completed with an error raises JobFailedError
        (JobCancelledError when it was cancelled)."""
        handle = self._as_job(job)
        return self._result_from(self._send("GET", handle.response_url), handle).with_record(
            getattr(handle, "record", None))

    def cancel(self, job: JobHandle | str) -> str:
        """Ask the server to cancel: ``"CANCELLATION_REQUESTED"``, or ``"ALREADY_COMPLETED"``.
        An unknown job raises QueueHTTPError (404)."""
        handle = self._as_job(job)
        return self._cancel_from(self._send("PUT", handle.cancel_url), handle)

    def wait(self, job: JobHandle | str, *, timeout: float | None = None,
             on_update: Callable[[Status], object] | None = None,
             logs: bool | None = None) -> InpaintResult:
        """Follow the job until it completes, calling ``on_update(status)`` for each status, then
        return its result.

        This is THE wait-with-timeout primitive (the sweep uses it): after ``timeout`` seconds
        the job is cancelled on the server and JobTimeoutError is raised (its ``cancelled`` says
        whether the cancel took). ``logs=False`` follows state changes only (no log lines are
        streamed, ``result.logs`` is None); ``logs=True`` streams them; by default (None) they
        are streamed only for an ``on_update`` callback, and ``result.logs`` asks for them once
        on first access."""
        deadline = _follow.deadline_after(timeout)
        handle = self._as_job(job)
        with self._cancel_on_interrupt(handle):
            return self._wait(handle, timeout, deadline, on_update, logs).with_record(
                getattr(handle, "record", None))

    def run(self, inputs: Mapping[str, Any] | None = None, /, *, timeout: float | None = None,
            on_update: Callable[[Status], object] | None = None,
            on_enqueue: Callable[[Job], object] | None = None, logs: bool | None = None,
            webhook_url: str | None = None, priority: str | None = None, hint: str | None = None,
            start_timeout: float | None = None, headers: Mapping[str, str] | None = None,
            **fields: Any) -> InpaintResult:
        """Submit, call ``on_enqueue(job)`` (the request id is known before any waiting), wait.
        ``timeout`` counts from the call; when it runs out the job is cancelled and
        JobTimeoutError raised. A KeyboardInterrupt (Ctrl-C) after the submit cancels the job on
        the server and is re-raised with a note naming its request id (also in the interrupt's
        ``request_id``; ``cancel_outcome`` is the server's answer, None if the cancel failed)."""
        deadline = _follow.deadline_after(timeout)
        entry = begin_run(self, inputs, fields)
        job = None
        try:
            job = self.submit(inputs, webhook_url=webhook_url, priority=priority, hint=hint,
                              start_timeout=start_timeout, headers=headers, **fields)
            with self._cancel_on_interrupt(job):
                if on_enqueue is not None:
                    on_enqueue(job)
                result = self._wait(job, timeout, deadline, on_update, logs).with_record(job.record)
        except BaseException as exc:
            if entry is not None and job is not None:  # refused before sending: not a run
                entry.finish(job=job, error=exc)
            raise
        if entry is not None:
            entry.finish(job=job, result=result)
        return result

    # -- following a job ---------------------------------------------------------------------

    def _wait(self, job: JobHandle, timeout: float | None, deadline: float | None,
              on_update: Callable[[Status], object] | None, logs: bool | None) -> InpaintResult:
        seen = Tracker()
        streamed = _follow.streams_logs(logs, on_update)
        follow = self._follow(job, logs=streamed, deadline=deadline)
        try:
            for status in follow:
                if on_update is not None:
                    on_update(status)
                if seen.see(status):
                    break
        except Deadline:
            follow.close()
            cancelled = self._cancel_quietly(job)
            raise JobTimeoutError(job.request_id, float(timeout or 0), cancelled=cancelled) from None
        finally:
            follow.close()
        later = None if streamed or logs is False else functools.partial(self._logs_once, job)
        return self._result_from(self._send("GET", job.response_url), job,
                                 logs=seen.logs if streamed else None, metrics=seen.metrics,
                                 fetch_logs=later)

    @contextlib.contextmanager
    def _cancel_on_interrupt(self, job: JobHandle) -> Iterator[None]:
        """A KeyboardInterrupt inside cancels ``job`` on the server (one short try) and goes on,
        with a note naming the request id."""
        try:
            yield
        except KeyboardInterrupt as exc:
            _follow.note_interrupt(exc, job.request_id, self._cancel_now(job))
            raise

    def _cancel_now(self, job: JobHandle) -> str | None:
        """One PUT cancel, no retries, a short timeout: the server's answer, or None. A second
        Ctrl-C skips it; nothing it raises replaces the interrupt being handled."""
        try:
            response = self._http.request("PUT", job.cancel_url, headers=self._headers_for(job.cancel_url),
                                          timeout=_follow.INTERRUPT_CANCEL_TIMEOUT)
            return self._cancel_from(response, job)
        except (Exception, KeyboardInterrupt) as exc:
            log.debug("cancel after an interrupt failed for %s: %s", job.request_id, type(exc).__name__)
            return None

    def _cancel_quietly(self, job: JobHandle) -> bool:
        try:
            outcome = self.cancel(job)
        except FluxnbError as exc:
            log.debug("cancel after timeout failed for %s: %s", job.request_id, type(exc).__name__)
            return False
        log.debug("cancel of %s after its timeout: %s", job.request_id, outcome)
        return outcome != "ALREADY_COMPLETED"  # it finished just as time ran out

    def _follow(self, job: JobHandle, *, logs: bool, deadline: float | None
                ) -> Generator[Status, None, None]:
        while self._stream_ok:
            try:
                with contextlib.closing(self._stream(job, logs=logs, deadline=deadline)) as events:
                    for status in events:
                        yield status
                        if isinstance(status, Completed):
                            return
            except StreamSilent:
                continue
            except StreamUnavailable:
                break
        while True:
            _follow.check_deadline(deadline)
            status = self.status(job, logs=logs)
            yield status
            if isinstance(status, Completed):
                return
            self._sleep(_follow.poll_wait(self.poll_interval, deadline))

    def _stream(self, job: JobHandle, *, logs: bool, deadline: float | None
                ) -> Generator[Status, None, None]:
        url, request = self._stream_request(job, logs, deadline)
        read_timeout = request["timeout"].read
        try:
            with self._http.stream("GET", url, **request) as response:
                self._stream_opened(response)
                parser = SSEParser()
                chunks = response.iter_text()
                for chunk in chunks:
                    for event in parser.feed(chunk):
                        status = _follow.event_status(event)
                        if status is None:
                            continue
                        if isinstance(status, Completed):
                            _follow.drain(chunks)
                            yield status
                            return
                        yield status
                    _follow.check_stream_deadline(deadline, read_timeout)  # also after keep-alives
        except httpx.TimeoutException:
            _follow.check_deadline(deadline)
            raise (StreamSilent if deadline is not None else StreamUnavailable) from None
        except httpx.TransportError as exc:
            log.debug("status stream of %s broke (%s); polling", job.request_id, type(exc).__name__)
            raise StreamUnavailable from None
        _follow.check_deadline(deadline)
        raise StreamUnavailable  # closed before COMPLETED: poll for the rest

    # -- results ---------------------------------------------------------------------------

    def _logs_once(self, job: JobHandle) -> list[LogEntry] | None:
        """The finished job's log lines, asked once (``result.logs`` when none were streamed)."""
        if self._http.is_closed:
            transport = self._transport if isinstance(self._transport, httpx.BaseTransport) else None
            response = get_once(job.status_url, params={"logs": "1"}, transport=transport,
                                http_kwargs=self._new_http_kwargs(),
                                headers=self._headers_for(job.status_url))
            return _follow.logs_of(self._status_from(response, job))
        return _follow.logs_of(self.status(job, logs=True))

    def _fetch_sync(self, url: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_uri(url)[1]
        if self._http.is_closed:
            transport = self._transport if isinstance(self._transport, httpx.BaseTransport) else None
            return download(url, transport=transport, http_kwargs=self._new_http_kwargs(),
                            headers=self._headers_for(url))
        response = self._send("GET", url, follow_redirects=True)
        if response.status_code >= 400:
            raise error_for_response(response)
        return response.content

    async def _fetch_async(self, url: str) -> bytes:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self._fetch_sync, url)
