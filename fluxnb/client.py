"""The queue client: :class:`QueueClient` and its async twin :class:`AsyncQueueClient`.

Both speak fal's queue protocol (submit, status, status stream, result, cancel) to fal.ai or to
fluxnb's local server, with the same method names; the async methods are coroutines (and
``stream_status`` an async iterator). Request building, the retry decision and error mapping are
pure helpers in :mod:`fluxnb._http`, shared by both.

>>> from fluxnb import QueueClient
>>> with QueueClient("http://127.0.0.1:8765") as client:           # doctest: +SKIP
...     result = client.run(prompt="a red fox", image_url="photo.jpg", mask_url="mask.png",
...                         on_enqueue=lambda job: print(job.request_id))
...     result.pil_images()[0]
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import time
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image

from . import _http
from ._http import (
    USER_AGENT,
    Secret,
    cancel_outcome,
    error_for_response,
    extra_submit_headers,
    is_fal_url,
    job_urls,
    log_path,
    merge_logs,
    read_json,
    result_error,
    retry_delay,
    same_host,
    strip_query,
)
from .datauri import decode_data_uri, encode_data_uri
from .errors import (
    CostWarning,
    EventLoopError,
    FluxnbError,
    JobTimeoutError,
    QueueHTTPError,
    TransportError,
)
from .images import encode_image, image_size_of, is_url, load_mask
from .masks import check_mask
from .protocol import DEFAULT_BASE_URL, Completed, LogEntry, Status, parse_status, request_path, split_app_id
from .result import InpaintResult
from .schema import (
    COST_WARNING_USD,
    ENDPOINT_ID,
    INPUT_FIELDS,
    PRICE_PER_MEGAPIXEL,
    estimate_cost,
    resolve_aliases,
    resolve_image_size,
    validate_input,
)
from .sse import SSEEvent, SSEParser
from .uploads import DEFAULT_CDN_URL, DEFAULT_REST_URL, AsyncFalStorage, FalStorage

__all__ = ["AsyncJob", "AsyncQueueClient", "Job", "QueueClient"]

log = logging.getLogger("fluxnb.client")

#: Default size (bytes) above which an input image is uploaded to fal storage instead of being
#: sent inline as a data URI (only when talking to fal).
DEFAULT_UPLOAD_THRESHOLD = 4 * 1024 * 1024

#: Stream answers that mean "this server has no SSE status stream": fall back to polling.
_NO_STREAM = (404, 405, 501)
#: ... and of those, the ones worth remembering for the client's lifetime.
_NO_STREAM_EVER = (405, 501)
#: Longest silence on an open status stream before polling takes over; fal sends a comment
#: every 15 s, so only a broken stream stays silent this long.
_STREAM_IDLE = 40.0


class _Deadline(Exception):
    """Internal: the wait's deadline passed."""


#: With a deadline, no single stream read waits longer than this; a silent stream is then
#: reopened, so a timeout is honoured within this many seconds even between keep-alives.
_DEADLINE_SLICE = 2.0


class _StreamSilent(Exception):
    """Internal: the stream was quiet for a slice of the deadline; reopen it."""


class _StreamUnavailable(Exception):
    """Internal: the SSE stream cannot be used (not offered, or broke); poll instead."""


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise _Deadline


def _check_stream_deadline(deadline: float | None, read_timeout: float) -> None:
    """After each stream chunk: _Deadline when time is up; _StreamSilent (reopen with a shorter
    read timeout) when the next read could block past the deadline."""
    if deadline is None:
        return
    now = time.monotonic()
    if now >= deadline:
        raise _Deadline
    if now + read_timeout > deadline + 0.05:
        raise _StreamSilent


def _poll_wait(interval: float, deadline: float | None) -> float:
    if deadline is None:
        return interval
    return max(0.0, min(interval, deadline - time.monotonic()))


#: Seconds the best-effort cancel after a Ctrl-C (or task cancellation) may take; one try.
_INTERRUPT_CANCEL_TIMEOUT = 3.0


def _note_interrupt(exc: BaseException, request_id: str, outcome: str | None) -> None:
    """Say on the interrupt which job it stopped and what the server did with the cancel:
    a note (shown under the traceback) and the attributes ``request_id`` and ``cancel_outcome``."""
    if outcome == "CANCELLATION_REQUESTED":
        text = f"fluxnb: cancelled request {request_id} on the server"
    elif outcome == "ALREADY_COMPLETED":
        text = f"fluxnb: request {request_id} had already completed on the server"
    else:
        text = (f"fluxnb: could not cancel request {request_id} on the server; it may still run "
                f"(cancel it with client.cancel({request_id!r}))")
    exc.add_note(text)
    exc.request_id = request_id  # type: ignore[attr-defined]
    exc.cancel_outcome = outcome  # type: ignore[attr-defined]


def _input_size(uri: Any, upload: tuple[bytes, str] | None) -> tuple[int, int] | None:
    """(width, height) of an encoded input image (a data URI, or bytes waiting for upload)."""
    try:
        data = upload[0] if upload is not None else decode_data_uri(uri)[1]
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            return image.size
    except Exception:  # an http(s) URL, or a payload the server will judge
        return None


def _event_status(event: SSEEvent) -> Status | None:
    import json

    try:
        return parse_status(json.loads(event.data))
    except ValueError:
        log.debug("ignoring an unreadable status event (%d chars)", len(event.data))
        return None


# The server closes the stream right after COMPLETED. Reading that end keeps the connection in
# the pool, so the result GET that follows reuses it instead of paying a new TCP + TLS handshake.
_DRAIN_LIMIT = 1 << 20


def _drain(chunks: Iterator[str]) -> None:
    read = 0
    try:
        for chunk in chunks:
            read += len(chunk)
            if read > _DRAIN_LIMIT:
                return
    except httpx.HTTPError:
        pass


async def _adrain(chunks: AsyncIterator[str]) -> None:
    read = 0
    try:
        async for chunk in chunks:
            read += len(chunk)
            if read > _DRAIN_LIMIT:
                return
    except httpx.HTTPError:
        pass


def _is_data_uri(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("data:")


def _numpy_scalar(value: Any) -> Any:
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def _ssl_verify(verify: Any) -> Any:
    """``verify`` for httpx: a CA bundle path (str/PathLike) becomes an SSL context, since httpx
    0.28 deprecates path strings; True/False/SSLContext pass through."""
    if isinstance(verify, (str, os.PathLike)):
        import ssl

        path = os.fspath(verify)
        if os.path.isdir(path):
            return ssl.create_default_context(capath=path)
        return ssl.create_default_context(cafile=path)
    return verify


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0):
        raise ValueError(f"timeout={timeout!r} must be a number of seconds > 0, or None")


# -- job handles -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A submitted request: its id and the URLs the server returned for it.

    Two handles are equal when their id and URLs are, so ``client.job(id) == client.submit(...)``
    holds for a fal-conformant server. The methods delegate to the client that made the handle.
    """

    request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    client: QueueClient | None = field(default=None, repr=False, compare=False)

    def __reduce__(self) -> Any:
        """Pickles as its id and URLs only (a restored handle has no client: use client.job)."""
        return (type(self), (self.request_id, self.response_url, self.status_url, self.cancel_url))

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

    def wait(self, timeout: float | None = None,
             on_update: Callable[[Status], Any] | None = None, *, logs: bool = True) -> InpaintResult:
        return self._client().wait(self, timeout=timeout, on_update=on_update, logs=logs)


@dataclass(frozen=True)
class AsyncJob:
    """The async twin of :class:`Job`: the same fields; the methods are coroutines
    (``stream`` an async iterator)."""

    request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    client: AsyncQueueClient | None = field(default=None, repr=False, compare=False)

    def __reduce__(self) -> Any:
        """Pickles as its id and URLs only (a restored handle has no client: use client.job)."""
        return (type(self), (self.request_id, self.response_url, self.status_url, self.cancel_url))

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

    async def wait(self, timeout: float | None = None, on_update: Callable[[Status], Any] | None = None,
                   *, logs: bool = True) -> InpaintResult:
        return await self._client().wait(self, timeout=timeout, on_update=on_update, logs=logs)


# -- the shared, I/O-free part -----------------------------------------------------------------


class _BaseClient:
    _job_class: type[Job] | type[AsyncJob]

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        key: str | None = None,
        app: str = ENDPOINT_ID,
        transport: Any = None,
        timeout: float = 30.0,
        max_retries: int = 6,
        poll_interval: float = 0.25,
        upload_threshold: int | None = DEFAULT_UPLOAD_THRESHOLD,
        verify: Any = True,
        rest_url: str = DEFAULT_REST_URL,
        cdn_url: str = DEFAULT_CDN_URL,
    ):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r} must be an http(s) URL")
        split_app_id(app)  # raises a ValueError naming a malformed app id
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise ValueError(f"timeout={timeout!r} must be a number of seconds > 0")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ValueError(f"max_retries={max_retries!r} must be an integer >= 0")
        if not isinstance(poll_interval, (int, float)) or poll_interval < 0:
            raise ValueError(f"poll_interval={poll_interval!r} must be a number of seconds >= 0")
        self.base_url = base_url.rstrip("/")
        self.app = app.strip("/")
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.poll_interval = float(poll_interval)
        self.upload_threshold = upload_threshold
        self.verify = verify
        self.rest_url = rest_url.rstrip("/")
        self.cdn_url = cdn_url.rstrip("/")
        self.is_fal = is_fal_url(self.base_url)
        resolved = _http.resolve_key(self.base_url, key)
        self._key: Secret | None = Secret(resolved) if resolved else None
        self._transport = transport
        self._stream_ok = True
        self._open()

    def _open(self) -> None:
        """Create the connection pool, the sleep hook and the storage uploader (per flavour)."""
        raise NotImplementedError

    @property
    def has_key(self) -> bool:
        """Whether requests carry an ``Authorization`` header (the key itself is never shown)."""
        return self._key is not None

    def clone(self, *, asynchronous: bool | None = None) -> QueueClient | AsyncQueueClient:
        """A new client with this one's settings and key, with its own connections: sync or async
        (default: the same flavour). One async client already works from several event loops
        (one pool per loop); a clone is for independent settings, or a sync twin.

        >>> aclient = client.clone(asynchronous=True)     # doctest: +SKIP
        """
        flavour = isinstance(self, AsyncQueueClient) if asynchronous is None else asynchronous
        cls: type[QueueClient] | type[AsyncQueueClient] = AsyncQueueClient if flavour else QueueClient
        wanted = httpx.AsyncBaseTransport if flavour else httpx.BaseTransport
        transport = self._transport if isinstance(self._transport, wanted) else None
        return cls(self.base_url, key=self._key.reveal() if self._key is not None else "",
                   app=self.app, transport=transport, timeout=self.timeout,
                   max_retries=self.max_retries, poll_interval=self.poll_interval,
                   upload_threshold=self.upload_threshold, verify=self.verify,
                   rest_url=self.rest_url, cdn_url=self.cdn_url)

    def __repr__(self) -> str:
        key = "***" if self._key is not None else "None"
        return f"{type(self).__name__}(base_url={self.base_url!r}, app={self.app!r}, key={key})"

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} cannot be pickled (it holds a key and connections)")

    # -- request building --------------------------------------------------------------------

    def _headers_for(self, url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The key goes only to the queue's own origin (and fal's REST host when talking to fal)."""
        headers: dict[str, str] = {}
        if self._key is not None and (
            same_host(url, self.base_url) or (self.is_fal and same_host(url, self.rest_url))
        ):
            headers.update(_http.auth_headers(self._key))
        if extra:
            headers.update(extra)
        return headers

    def _new_http_kwargs(self) -> dict[str, Any]:
        return {
            "timeout": httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            "headers": {"User-Agent": USER_AGENT},
            "verify": _ssl_verify(self.verify),
        }

    def _submit_url(self) -> str:
        return f"{self.base_url}/{self.app}"

    def _make_job(self, request_id: str, response_url: str, status_url: str, cancel_url: str) -> Any:
        return self._job_class(request_id=request_id, response_url=response_url,
                               status_url=status_url, cancel_url=cancel_url,
                               client=self)  # type: ignore[arg-type]

    def job(self, request_id: str) -> Any:
        """A handle for a request submitted earlier (fal's ``get_handle``): URLs are built the way
        fal builds them, ``{base_url}/{owner}/{app}/requests/{id}``."""
        if not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id={request_id!r} must be a non-empty string")
        response_url = self.base_url + request_path(self.app, request_id)
        return self._make_job(request_id, response_url, response_url + "/status",
                              response_url + "/cancel")

    def _as_job(self, job: Any) -> Any:
        if isinstance(job, str):
            return self.job(job)
        if isinstance(job, (Job, AsyncJob)):
            return job
        raise TypeError(f"expected a job handle or a request id, not {type(job).__name__}")

    def _prepare(self, inputs: Mapping[str, Any] | None, fields: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, tuple[bytes, str]]]:
        """Merge, encode images, validate: everything before the first byte is sent.

        Returns the body and the images that must be uploaded to fal storage first (their slot in
        the body holds a placeholder until then).
        """
        if inputs is not None and not isinstance(inputs, Mapping):
            raise TypeError(f"inputs must be a mapping of field -> value, not {type(inputs).__name__}")
        merged = {**resolve_aliases(inputs or {}), **resolve_aliases(fields)}  # steps= ... too
        body = {k: _numpy_scalar(v) for k, v in merged.items()}
        self._check_mask(body)
        pending: dict[str, tuple[bytes, str]] = {}
        for name in ("image_url", "mask_url"):
            value = body.get(name)
            if value is None or is_url(value):
                continue
            encoded = encode_image(value, mask=name == "mask_url")
            if isinstance(encoded, str):
                body[name] = encoded
                continue
            data, mime = encoded
            if self.is_fal and self.upload_threshold is not None and len(data) > self.upload_threshold:
                pending[name] = (data, mime)
                body[name] = "data:" + mime + ";base64,"  # placeholder, replaced after validation
            else:
                body[name] = encode_data_uri(data, mime)
        checked = validate_input(body)
        self._warn_cost(checked, pending)
        return checked, pending

    _cost_warned = False

    def _warn_cost(self, body: Mapping[str, Any], pending: Mapping[str, tuple[bytes, str]]) -> None:
        """On fal.ai, warn once per client (CostWarning) when a job costs COST_WARNING_USD or more."""
        if not self.is_fal or self._cost_warned:
            return
        size = _input_size(body.get("image_url"), pending.get("image_url"))
        if size is None and not isinstance(body.get("image_size"), (str, Mapping)):
            return  # an http(s) image of unknown size: nothing to estimate without a download
        width, height = resolve_image_size(body.get("image_size"), size or (0, 0))
        count = int(body.get("num_images", INPUT_FIELDS["num_images"].default))
        cost = estimate_cost(width, height, count)
        if cost >= COST_WARNING_USD:
            self._cost_warned = True
            warnings.warn(f"this fal.ai job makes {count} image{'s' if count != 1 else ''} of "
                          f"{width}x{height} ({width * height * count / 1e6:.1f} MP): about "
                          f"${cost:.2f} at ${PRICE_PER_MEGAPIXEL}/MP. Pass image_size= for smaller "
                          "outputs (this warning is shown once per client)",
                          CostWarning, stacklevel=4)

    @staticmethod
    def _needs_encoding(inputs: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> bool:
        merged = {**resolve_aliases(inputs or {}), **resolve_aliases(fields)} \
            if isinstance(inputs, Mapping) or inputs is None else {}
        mask = merged.get("mask_url")
        return any(merged.get(name) is not None and not is_url(merged.get(name))
                   for name in ("image_url", "mask_url")) or _is_data_uri(mask)

    @staticmethod
    def _check_mask(body: dict[str, Any]) -> None:
        """Refuse a mask that repaints nothing, and fit it to the image (``fit_mask``: another
        aspect ratio is a MaskMismatchError, another size is resized), for every mask the client
        can see; an http(s) mask (or image) is left to the server, which checks it the same way."""
        mask = body.get("mask_url")
        if mask is None or (isinstance(mask, str) and is_url(mask) and not _is_data_uri(mask)):
            return
        image = body.get("image_url")
        loaded = load_mask(mask)
        fitted = check_mask(loaded, None if image is None else image_size_of(image))
        if fitted is not loaded or hasattr(mask, "read"):  # resized, or a stream read once
            body["mask_url"] = fitted

    @staticmethod
    def _file_name(name: str, mime: str) -> str:
        ext = {"image/png": "png", "image/jpeg": "jpg"}.get(mime, "bin")
        return f"{name.removesuffix('_url')}.{ext}"

    def _job_from_submit(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise error_for_response(response)
        body = read_json(response, "submit")
        urls = job_urls(body, base_url=self.base_url, app=self.app, status_code=response.status_code)
        log.debug("submitted request %s", urls["request_id"])
        return self._make_job(**urls)

    @staticmethod
    def _status_from(response: httpx.Response, job: Job | AsyncJob) -> Status:
        if response.status_code >= 400:
            raise error_for_response(response, job.request_id)
        body = read_json(response, "status", job.request_id)
        try:
            return parse_status(body)
        except ValueError as exc:
            raise QueueHTTPError(response.status_code, f"odd status answer: {exc}",
                                 request_id=job.request_id, url=strip_query(job.status_url)) from None

    def _result_from(self, response: httpx.Response, job: Job | AsyncJob, *,
                     logs: list[LogEntry] | None = None,
                     metrics: Mapping[str, Any] | None = None) -> InpaintResult:
        if response.status_code >= 400:
            raise result_error(response, job.request_id)
        body = read_json(response, "result", job.request_id)
        if not isinstance(body, Mapping):
            raise QueueHTTPError(response.status_code, f"result is not a JSON object: {str(body)[:120]}",
                                 request_id=job.request_id, url=strip_query(job.response_url))
        return InpaintResult(body, request_id=job.request_id, logs=logs, metrics=metrics,
                             fetch=self._fetch_sync, afetch=self._fetch_async)

    @staticmethod
    def _cancel_from(response: httpx.Response, job: Job | AsyncJob) -> str:
        outcome = cancel_outcome(response)
        if outcome is None:
            raise error_for_response(response, job.request_id)
        return outcome

    def _stream_request(self, job: Job | AsyncJob, logs: bool, deadline: float | None
                        ) -> dict[str, Any]:
        url = job.status_url.rstrip("/") + "/stream"
        # Each read waits at most until the deadline; a server silent for longer than
        # _STREAM_IDLE (fal sends a keep-alive every 15 s) is given up on in favour of polling.
        read = _STREAM_IDLE if deadline is None else \
            max(0.01, min(_DEADLINE_SLICE, deadline - time.monotonic() + 0.05))
        return {
            "method": "GET",
            "url": url,
            "params": {"logs": "1" if logs else "0"},
            "headers": self._headers_for(url),
            "timeout": httpx.Timeout(self.timeout, read=read),
        }

    def _stream_opened(self, response: httpx.Response) -> None:
        log.debug("GET %s -> %d (stream)", log_path(str(response.request.url)), response.status_code)
        if response.status_code in _NO_STREAM:
            if response.status_code in _NO_STREAM_EVER:
                self._stream_ok = False
            raise _StreamUnavailable
        ctype = response.headers.get("content-type", "")
        if response.status_code >= 300 or "text/event-stream" not in ctype:
            raise _StreamUnavailable

    # -- image download (results) ------------------------------------------------------------

    def _sync_download(self, url: str) -> bytes:
        """Download with a short-lived sync client (used when the client's own cannot)."""
        transport = self._transport if isinstance(self._transport, httpx.BaseTransport) else None
        with httpx.Client(transport=transport, **self._new_http_kwargs()) as http:
            response = http.get(url, headers=self._headers_for(url), follow_redirects=True)
            if response.status_code >= 400:
                raise error_for_response(response)
            return response.content

    def _fetch_sync(self, url: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_uri(url)[1]
        return self._sync_download(url)

    async def _fetch_async(self, url: str) -> bytes:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self._fetch_sync, url)


# -- sync --------------------------------------------------------------------------------------


class QueueClient(_BaseClient):
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
    """

    _job_class = Job

    def _open(self) -> None:
        self._http = httpx.Client(transport=self._transport, **self._new_http_kwargs())
        #: The sleep used between retries and polls; tests replace it to record delays.
        self._sleep: Callable[[float], Any] = time.sleep
        self._storage = FalStorage(self._send, key=self._key, rest_url=self.rest_url,
                                   cdn_url=self.cdn_url)

    def __enter__(self) -> QueueClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- the I/O core ------------------------------------------------------------------------

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

    def submit(
        self,
        inputs: Mapping[str, Any] | None = None,
        /,
        *,
        webhook_url: str | None = None,
        priority: str | None = None,
        hint: str | None = None,
        start_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> Job:
        """Queue a job; returns its handle. Inputs are encoded and validated before anything is
        sent (a bad input raises ValidationError without a request)."""
        body, pending = self._prepare(inputs, fields)
        extra = extra_submit_headers(priority=priority, hint=hint, start_timeout=start_timeout,
                                     headers=headers)
        for name, (data, mime) in pending.items():
            body[name] = self._storage.upload(data, mime, self._file_name(name, mime))
        params = {"fal_webhook": webhook_url} if webhook_url else None
        response = self._send("POST", self._submit_url(), idempotent=False, json=body,
                              params=params, headers={"Content-Type": "application/json", **extra})
        job: Job = self._job_from_submit(response)
        return job

    def status(self, job: Job | str, *, logs: bool = False) -> Status:
        """The job's status now: Queued, InProgress or Completed (``logs`` asks for its log lines)."""
        handle: Job = self._as_job(job)
        response = self._send("GET", handle.status_url, params={"logs": "1" if logs else "0"})
        return self._status_from(response, handle)

    def stream_status(self, job: Job | str, *, logs: bool = True) -> Iterator[Status]:
        """Statuses as they change, until Completed: the SSE stream, or polling every
        ``poll_interval`` when the server has none."""
        return self._follow(self._as_job(job), logs=logs, deadline=None)

    def result(self, job: Job | str) -> InpaintResult:
        """The job's output. A job that completed with an error raises JobFailedError
        (JobCancelledError when it was cancelled)."""
        handle: Job = self._as_job(job)
        return self._result_from(self._send("GET", handle.response_url), handle)

    def cancel(self, job: Job | str) -> str:
        """Ask the server to cancel: ``"CANCELLATION_REQUESTED"``, or ``"ALREADY_COMPLETED"``.
        An unknown job raises QueueHTTPError (404)."""
        handle: Job = self._as_job(job)
        return self._cancel_from(self._send("PUT", handle.cancel_url), handle)

    def wait(self, job: Job | str, *, timeout: float | None = None,
             on_update: Callable[[Status], Any] | None = None, logs: bool = True) -> InpaintResult:
        """Follow the job until it completes, calling ``on_update(status)`` for each status, then
        return its result. After ``timeout`` seconds the job is cancelled on the server and
        JobTimeoutError is raised."""
        _check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        handle: Job = self._as_job(job)
        with self._cancel_on_interrupt(handle):
            return self._wait(handle, timeout, deadline, on_update, logs)

    def run(
        self,
        inputs: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        on_update: Callable[[Status], Any] | None = None,
        on_enqueue: Callable[[Job], Any] | None = None,
        logs: bool = True,
        webhook_url: str | None = None,
        priority: str | None = None,
        hint: str | None = None,
        start_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> InpaintResult:
        """Submit, call ``on_enqueue(job)`` (the request id is known before any waiting), wait.
        ``timeout`` counts from the call; when it runs out the job is cancelled and
        JobTimeoutError raised. A KeyboardInterrupt (Ctrl-C) after the submit cancels the job on
        the server and is re-raised with a note naming its request id (also in the interrupt's
        ``request_id``; ``cancel_outcome`` is the server's answer, None if the cancel failed)."""
        _check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.submit(inputs, webhook_url=webhook_url, priority=priority, hint=hint,
                          start_timeout=start_timeout, headers=headers, **fields)
        with self._cancel_on_interrupt(job):
            if on_enqueue is not None:
                on_enqueue(job)
            return self._wait(job, timeout, deadline, on_update, logs)

    # -- following a job ---------------------------------------------------------------------

    def _wait(self, job: Job, timeout: float | None, deadline: float | None,
              on_update: Callable[[Status], Any] | None, logs: bool) -> InpaintResult:
        seen: list[LogEntry] = []
        metrics: Mapping[str, Any] = {}
        follow = self._follow(job, logs=logs, deadline=deadline)
        try:
            for status in follow:
                seen = merge_logs(seen, getattr(status, "logs", None))
                if on_update is not None:
                    on_update(status)
                if isinstance(status, Completed):
                    metrics = status.metrics
                    break
        except _Deadline:
            follow.close()
            cancelled = self._cancel_quietly(job)
            raise JobTimeoutError(job.request_id, float(timeout or 0), cancelled=cancelled) from None
        finally:
            follow.close()
        return self._result_from(self._send("GET", job.response_url), job,
                                 logs=seen if logs else None, metrics=metrics)

    @contextlib.contextmanager
    def _cancel_on_interrupt(self, job: Job) -> Iterator[None]:
        """A KeyboardInterrupt inside cancels ``job`` on the server (one short try) and goes on,
        with a note naming the request id."""
        try:
            yield
        except KeyboardInterrupt as exc:
            _note_interrupt(exc, job.request_id, self._cancel_now(job))
            raise

    def _cancel_now(self, job: Job) -> str | None:
        """One PUT cancel, no retries, a short timeout: the server's answer, or None. A second
        Ctrl-C skips it; nothing it raises replaces the interrupt being handled."""
        try:
            response = self._http.request("PUT", job.cancel_url, headers=self._headers_for(job.cancel_url),
                                          timeout=_INTERRUPT_CANCEL_TIMEOUT)
            return self._cancel_from(response, job)
        except (Exception, KeyboardInterrupt) as exc:
            log.debug("cancel after an interrupt failed for %s: %s", job.request_id, type(exc).__name__)
            return None

    def _cancel_quietly(self, job: Job) -> bool:
        try:
            outcome = self.cancel(job)
        except FluxnbError as exc:
            log.debug("cancel after timeout failed for %s: %s", job.request_id, type(exc).__name__)
            return False
        log.debug("cancel of %s after its timeout: %s", job.request_id, outcome)
        return outcome != "ALREADY_COMPLETED"  # it finished just as time ran out

    def _follow(self, job: Job, *, logs: bool, deadline: float | None) -> Generator[Status, None, None]:
        while self._stream_ok:
            try:
                with contextlib.closing(self._stream(job, logs=logs, deadline=deadline)) as events:
                    for status in events:
                        yield status
                        if isinstance(status, Completed):
                            return
            except _StreamSilent:
                continue
            except _StreamUnavailable:
                break
        while True:
            _check_deadline(deadline)
            status = self.status(job, logs=logs)
            yield status
            if isinstance(status, Completed):
                return
            self._sleep(_poll_wait(self.poll_interval, deadline))

    def _stream(self, job: Job, *, logs: bool, deadline: float | None) -> Generator[Status, None, None]:
        request = self._stream_request(job, logs, deadline)
        read_timeout = request["timeout"].read
        try:
            with self._http.stream(request.pop("method"), request.pop("url"), **request) as response:
                self._stream_opened(response)
                parser = SSEParser()
                chunks = response.iter_text()
                for chunk in chunks:
                    for event in parser.feed(chunk):
                        status = _event_status(event)
                        if status is None:
                            continue
                        if isinstance(status, Completed):
                            _drain(chunks)
                            yield status
                            return
                        yield status
                    _check_stream_deadline(deadline, read_timeout)  # also after keep-alives
        except httpx.TimeoutException:
            _check_deadline(deadline)
            raise (_StreamSilent if deadline is not None else _StreamUnavailable) from None
        except httpx.TransportError as exc:
            log.debug("status stream of %s broke (%s); polling", job.request_id, type(exc).__name__)
            raise _StreamUnavailable from None
        _check_deadline(deadline)
        raise _StreamUnavailable  # closed before COMPLETED: poll for the rest

    # -- results ---------------------------------------------------------------------------

    def _fetch_sync(self, url: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_uri(url)[1]
        if self._http.is_closed:
            return self._sync_download(url)
        response = self._send("GET", url, follow_redirects=True)
        if response.status_code >= 400:
            raise error_for_response(response)
        return response.content


# -- async -------------------------------------------------------------------------------------


async def _close_pool(pool: httpx.AsyncClient) -> None:
    await pool.aclose()


def _loop_error(exc: RuntimeError) -> EventLoopError | None:
    """The fluxnb error for asyncio's "bound to a different event loop" (and "Event loop is
    closed") raised from inside a caller's transport; None for any other RuntimeError."""
    text = str(exc)
    if "different event loop" not in text and "Event loop is closed" not in text:
        return None
    return EventLoopError(
        f"this AsyncQueueClient's transport= belongs to another event loop ({text}). The client "
        "keeps one connection pool per event loop by itself, but a transport you pass is shared "
        "by every loop: use such a client from one event loop only, or make one client (with its "
        "own transport) per loop; without transport=, one client works from any loop")


async def _call(callback: Callable[[Any], Any] | None, value: Any) -> None:
    if callback is not None:
        outcome = callback(value)
        if inspect.isawaitable(outcome):
            await outcome


class AsyncQueueClient(_BaseClient):
    """The async twin of :class:`QueueClient`: same arguments, same method names; the methods are
    coroutines, ``stream_status`` is an async iterator, and callbacks may be sync or async.

    **Event loops.** Connections belong to the event loop that opened them, so the client keeps
    one connection pool per loop, made on first use in that loop and closed when the loop ends
    (``asyncio.run`` returning) or on :meth:`aclose`: one client may be used from the kernel's
    loop, a panel's loop thread and ``asyncio.run`` alike. A ``transport=`` you pass is shared by
    every loop instead; a loop-bound one used from a second loop raises
    :class:`~fluxnb.errors.EventLoopError` (make one client, with its own transport, per loop).
    """

    _job_class = AsyncJob

    def _open(self) -> None:
        from ._aio import PerLoop

        #: One httpx.AsyncClient per event loop (see the class docstring and ``_http``).
        self._pools: PerLoop[httpx.AsyncClient] = PerLoop(self._new_pool, _close_pool)
        #: With a caller's transport (or outside asyncio): one pool for every loop.
        self._shared: httpx.AsyncClient | None = None
        if self._transport is not None:
            self._shared = self._new_pool()
        self._closed_pool: httpx.AsyncClient | None = None
        import anyio

        #: The sleep used between retries and polls; tests replace it to record delays.
        self._sleep: Callable[[float], Any] = anyio.sleep
        self._storage = AsyncFalStorage(self._send, key=self._key, rest_url=self.rest_url,
                                        cdn_url=self.cdn_url)

    async def __aenter__(self) -> AsyncQueueClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pools (of every event loop that used this client)."""
        closed = self._new_pool()
        await closed.aclose()
        self._closed_pool = closed  # from now on ``_http`` is a closed pool: requests fail
        await self._pools.aclose()
        if self._shared is not None:
            await self._shared.aclose()

    def _new_pool(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self._transport, **self._new_http_kwargs())

    @property
    def _http(self) -> httpx.AsyncClient:
        """The connection pool of the running event loop (see the class docstring)."""
        if self._closed_pool is not None:
            return self._closed_pool
        if self._shared is None:
            import asyncio

            try:
                asyncio.get_running_loop()
            except RuntimeError:  # not on an asyncio loop (trio, through anyio): one pool
                self._shared = self._new_pool()
            else:
                return self._pools.get()
        return self._shared

    async def _send(self, method: str, url: str, *, idempotent: bool = True,
                    headers: Mapping[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """One request with retries; returns the last response (whatever its status)."""
        path = log_path(url)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(method, url,
                                                    headers=self._headers_for(url, headers), **kwargs)
            except RuntimeError as exc:
                if (loop_error := _loop_error(exc)) is None:
                    raise
                raise loop_error from exc
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

    async def submit(
        self,
        inputs: Mapping[str, Any] | None = None,
        /,
        *,
        webhook_url: str | None = None,
        priority: str | None = None,
        hint: str | None = None,
        start_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> AsyncJob:
        """Queue a job; returns its handle. See :meth:`QueueClient.submit`."""
        if self._needs_encoding(inputs, fields):
            # PNG encoding and file reads are blocking work: keep them off the event loop
            import anyio.to_thread

            body, pending = await anyio.to_thread.run_sync(self._prepare, inputs, fields)
        else:
            body, pending = self._prepare(inputs, fields)
        extra = extra_submit_headers(priority=priority, hint=hint, start_timeout=start_timeout,
                                     headers=headers)
        for name, (data, mime) in pending.items():
            body[name] = await self._storage.upload(data, mime, self._file_name(name, mime))
        params = {"fal_webhook": webhook_url} if webhook_url else None
        response = await self._send("POST", self._submit_url(), idempotent=False, json=body,
                                    params=params,
                                    headers={"Content-Type": "application/json", **extra})
        job: AsyncJob = self._job_from_submit(response)
        return job

    async def status(self, job: AsyncJob | str, *, logs: bool = False) -> Status:
        """See :meth:`QueueClient.status`."""
        handle: AsyncJob = self._as_job(job)
        response = await self._send("GET", handle.status_url, params={"logs": "1" if logs else "0"})
        return self._status_from(response, handle)

    def stream_status(self, job: AsyncJob | str, *, logs: bool = True) -> AsyncIterator[Status]:
        """See :meth:`QueueClient.stream_status`; an async iterator."""
        return self._follow(self._as_job(job), logs=logs, deadline=None)

    async def result(self, job: AsyncJob | str) -> InpaintResult:
        """See :meth:`QueueClient.result`."""
        handle: AsyncJob = self._as_job(job)
        return self._result_from(await self._send("GET", handle.response_url), handle)

    async def cancel(self, job: AsyncJob | str) -> str:
        """See :meth:`QueueClient.cancel`."""
        handle: AsyncJob = self._as_job(job)
        return self._cancel_from(await self._send("PUT", handle.cancel_url), handle)

    async def wait(self, job: AsyncJob | str, *, timeout: float | None = None,
                   on_update: Callable[[Status], Any] | None = None,
                   logs: bool = True) -> InpaintResult:
        """See :meth:`QueueClient.wait`; ``on_update`` may be a coroutine function."""
        _check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        handle: AsyncJob = self._as_job(job)
        async with self._cancel_on_interrupt(handle):
            return await self._wait(handle, timeout, deadline, on_update, logs)

    async def run(
        self,
        inputs: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        on_update: Callable[[Status], Any] | None = None,
        on_enqueue: Callable[[AsyncJob], Any] | None = None,
        logs: bool = True,
        webhook_url: str | None = None,
        priority: str | None = None,
        hint: str | None = None,
        start_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> InpaintResult:
        """See :meth:`QueueClient.run`; callbacks may be coroutine functions. Cancelling the task
        (like a KeyboardInterrupt) after the submit cancels the job on the server; the
        CancelledError goes on with a note naming the request id."""
        _check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        job = await self.submit(inputs, webhook_url=webhook_url, priority=priority, hint=hint,
                                start_timeout=start_timeout, headers=headers, **fields)
        async with self._cancel_on_interrupt(job):
            await _call(on_enqueue, job)
            return await self._wait(job, timeout, deadline, on_update, logs)

    async def _wait(self, job: AsyncJob, timeout: float | None, deadline: float | None,
                    on_update: Callable[[Status], Any] | None, logs: bool) -> InpaintResult:
        seen: list[LogEntry] = []
        metrics: Mapping[str, Any] = {}
        follow = self._follow(job, logs=logs, deadline=deadline)
        try:
            async for status in follow:
                seen = merge_logs(seen, getattr(status, "logs", None))
                await _call(on_update, status)
                if isinstance(status, Completed):
                    metrics = status.metrics
                    break
        except _Deadline:
            await follow.aclose()
            cancelled = await self._cancel_quietly(job)
            raise JobTimeoutError(job.request_id, float(timeout or 0), cancelled=cancelled) from None
        finally:
            await follow.aclose()
        return self._result_from(await self._send("GET", job.response_url), job,
                                 logs=seen if logs else None, metrics=metrics)

    @contextlib.asynccontextmanager
    async def _cancel_on_interrupt(self, job: AsyncJob) -> AsyncIterator[None]:
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
            _note_interrupt(exc, job.request_id, outcome)
            raise

    async def _cancel_now(self, job: AsyncJob) -> str | None:
        """See :meth:`QueueClient._cancel_now`."""
        try:
            response = await self._http.request("PUT", job.cancel_url,
                                                headers=self._headers_for(job.cancel_url),
                                                timeout=_INTERRUPT_CANCEL_TIMEOUT)
            return self._cancel_from(response, job)
        except Exception as exc:
            log.debug("cancel after an interrupt failed for %s: %s", job.request_id, type(exc).__name__)
            return None

    async def _cancel_quietly(self, job: AsyncJob) -> bool:
        try:
            outcome = await self.cancel(job)
        except FluxnbError as exc:
            log.debug("cancel after timeout failed for %s: %s", job.request_id, type(exc).__name__)
            return False
        log.debug("cancel of %s after its timeout: %s", job.request_id, outcome)
        return outcome != "ALREADY_COMPLETED"  # it finished just as time ran out

    async def _follow(self, job: AsyncJob, *, logs: bool, deadline: float | None
                      ) -> AsyncGenerator[Status, None]:
        while self._stream_ok:
            try:
                async with contextlib.aclosing(self._stream(job, logs=logs, deadline=deadline)) \
                        as events:
                    async for status in events:
                        yield status
                        if isinstance(status, Completed):
                            return
            except _StreamSilent:
                continue
            except _StreamUnavailable:
                break
        while True:
            _check_deadline(deadline)
            status = await self.status(job, logs=logs)
            yield status
            if isinstance(status, Completed):
                return
            await self._sleep(_poll_wait(self.poll_interval, deadline))

    async def _stream(self, job: AsyncJob, *, logs: bool, deadline: float | None
                      ) -> AsyncGenerator[Status, None]:
        request = self._stream_request(job, logs, deadline)
        read_timeout = request["timeout"].read
        try:
            async with self._http.stream(request.pop("method"), request.pop("url"),
                                         **request) as response:
                self._stream_opened(response)
                parser = SSEParser()
                achunks = response.aiter_text()
                async for chunk in achunks:
                    for event in parser.feed(chunk):
                        status = _event_status(event)
                        if status is None:
                            continue
                        if isinstance(status, Completed):
                            await _adrain(achunks)
                            yield status
                            return
                        yield status
                    _check_stream_deadline(deadline, read_timeout)  # also after keep-alives
        except httpx.TimeoutException:
            _check_deadline(deadline)
            raise (_StreamSilent if deadline is not None else _StreamUnavailable) from None
        except httpx.TransportError as exc:
            log.debug("status stream of %s broke (%s); polling", job.request_id, type(exc).__name__)
            raise _StreamUnavailable from None
        except RuntimeError as exc:
            if (loop_error := _loop_error(exc)) is None:
                raise
            raise loop_error from exc
        _check_deadline(deadline)
        raise _StreamUnavailable

    async def _fetch_async(self, url: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_uri(url)[1]
        if self._http.is_closed:
            return await super()._fetch_async(url)
        response = await self._send("GET", url, follow_redirects=True)
        if response.status_code >= 400:
            raise error_for_response(response)
        return response.content

