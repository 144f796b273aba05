"""The I/O-free half of both clients: settings, headers, request building, answers -> objects.

:class:`_BaseClient` is generic over its job handle (``Job`` for the sync client, ``AsyncJob``
for the async one), so ``client.job(id)`` and ``client.submit(...)`` are typed by client. The
subclasses in ``_sync`` and ``_async`` add only the I/O, with the same method names (the httpx
design).

>>> JobHandle("r1", "https://q/r1", "https://q/r1/status", "https://q/r1/cancel").request_id
'r1'
"""

from __future__ import annotations

import logging
import os
import ssl
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

import httpx

from ..errors import CostWarning, QueueHTTPError
from ..protocol import DEFAULT_BASE_URL, LogEntry, Status, parse_status, request_path, split_app_id
from ..schema import ENDPOINT_ID
from . import _follow
from ._inputs import Pending, cost_warning, prepare_body
from ._responses import (
    USER_AGENT,
    cancel_outcome,
    error_for_response,
    job_urls,
    log_path,
    read_json,
    result_error,
    strip_query,
)
from .auth import Secret, auth_headers, is_fal_url, resolve_key, same_host
from .result import InpaintResult
from .uploads import DEFAULT_CDN_URL, DEFAULT_REST_URL

__all__ = ["DEFAULT_UPLOAD_THRESHOLD", "JobHandle", "JobT", "Verify"]

log = logging.getLogger("fluxnb.client")

#: Default size (bytes) above which an input image is uploaded to fal storage instead of being
#: sent inline as a data URI (only when talking to fal).
DEFAULT_UPLOAD_THRESHOLD = 4 * 1024 * 1024

#: TLS verification as httpx takes it, or a CA bundle path (a file or a directory).
Verify = bool | str | os.PathLike[str] | ssl.SSLContext


@dataclass(frozen=True)
class JobHandle:
    """A submitted request's id and the URLs the server returned for it (the client-free part
    of ``Job`` and ``AsyncJob``)."""

    request_id: str
    response_url: str
    status_url: str
    cancel_url: str

    def __reduce__(self) -> tuple[type[JobHandle], tuple[str, str, str, str]]:
        """Pickles as its id and URLs only (a restored handle has no client: use client.job)."""
        return (type(self), (self.request_id, self.response_url, self.status_url, self.cancel_url))


JobT = TypeVar("JobT", bound=JobHandle)


def _ssl_verify(verify: Verify) -> bool | ssl.SSLContext:
    """``verify`` for httpx: a CA bundle path (str/PathLike) becomes an SSL context, since httpx
    0.28 deprecates path strings; True/False/SSLContext pass through."""
    if isinstance(verify, (str, os.PathLike)):
        path = os.fspath(verify)
        if os.path.isdir(path):
            return ssl.create_default_context(capath=path)
        return ssl.create_default_context(cafile=path)
    return verify


def _check_settings(base_url: object, app: str, timeout: object, max_retries: object,
                    poll_interval: object) -> None:
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url={base_url!r} must be an http(s) URL")
    split_app_id(app)  # raises a ValueError naming a malformed app id
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
        raise ValueError(f"timeout={timeout!r} must be a number of seconds > 0")
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise ValueError(f"max_retries={max_retries!r} must be an integer >= 0")
    if not isinstance(poll_interval, (int, float)) or poll_interval < 0:
        raise ValueError(f"poll_interval={poll_interval!r} must be a number of seconds >= 0")


class _BaseClient(Generic[JobT]):
    #: Which flavour a subclass is; the two public clients register themselves for ``clone``.
    _asynchronous: ClassVar[bool]
    _flavours: ClassVar[dict[bool, type[_BaseClient[Any]]]] = {}
    _cost_warned = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_asynchronous" in cls.__dict__:
            _BaseClient._flavours[cls._asynchronous] = cls

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        key: str | None = None,
        app: str = ENDPOINT_ID,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        max_retries: int = 6,
        poll_interval: float = 0.25,
        upload_threshold: int | None = DEFAULT_UPLOAD_THRESHOLD,
        verify: Verify = True,
        rest_url: str = DEFAULT_REST_URL,
        cdn_url: str = DEFAULT_CDN_URL,
        journal: bool | None = None,
    ):
        _check_settings(base_url, app, timeout, max_retries, poll_interval)
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
        #: Whether ``run`` records in the run journal (:mod:`fluxnb.client.journal`): True
        #: always, False never (not even from the panel), None: the panel and CLI do, run not.
        self.journal = journal
        #: The backend's name in the journal when not its host (``embedded``: set by connect).
        self.journal_backend: str | None = None
        resolved = resolve_key(self.base_url, key)
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

    def _clone(self, asynchronous: bool | None) -> _BaseClient[Any]:
        """A new client with this one's settings and key (see ``clone`` on the two clients)."""
        flavour = self._asynchronous if asynchronous is None else bool(asynchronous)
        wanted = httpx.AsyncBaseTransport if flavour else httpx.BaseTransport
        transport = self._transport if isinstance(self._transport, wanted) else None
        return self._flavours[flavour](
            self.base_url, key=self._key.reveal() if self._key is not None else "", app=self.app,
            transport=transport, timeout=self.timeout, max_retries=self.max_retries,
            poll_interval=self.poll_interval, upload_threshold=self.upload_threshold,
            verify=self.verify, rest_url=self.rest_url, cdn_url=self.cdn_url,
            journal=self.journal)

    def __repr__(self) -> str:
        key = "***" if self._key is not None else "None"
        return f"{type(self).__name__}(base_url={self.base_url!r}, app={self.app!r}, key={key})"

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be pickled (it holds a key and connections)")

    # -- request building --------------------------------------------------------------------

    def _headers_for(self, url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The key goes only to the queue's own origin (and fal's REST host when talking to fal)."""
        headers: dict[str, str] = {}
        if self._key is not None and (
            same_host(url, self.base_url) or (self.is_fal and same_host(url, self.rest_url))
        ):
            headers.update(auth_headers(self._key))
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

    def _make_job(self, request_id: str, response_url: str, status_url: str,
                  cancel_url: str) -> JobT:
        """This client's handle type, bound to this client."""
        raise NotImplementedError

    def job(self, request_id: str) -> JobT:
        """A handle for a request submitted earlier (fal's ``get_handle``): URLs are built the way
        fal builds them, ``{base_url}/{owner}/{app}/requests/{id}``."""
        if not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id={request_id!r} must be a non-empty string")
        response_url = self.base_url + request_path(self.app, request_id)
        return self._make_job(request_id, response_url, response_url + "/status",
                              response_url + "/cancel")

    def _as_job(self, job: JobHandle | str) -> JobHandle:
        """A handle for ``job`` (a handle of either flavour, or a request id)."""
        if isinstance(job, str):
            return self.job(job)
        if isinstance(job, JobHandle):
            return job
        raise TypeError(f"expected a job handle or a request id, not {type(job).__name__}")

    def _prepare(self, inputs: Mapping[str, Any] | None, fields: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], Pending]:
        """The checked submit body and the images to upload first (see ``_inputs``)."""
        upload_over = self.upload_threshold if self.is_fal else None
        body, pending = prepare_body(inputs, fields, upload_over=upload_over)
        if self.is_fal and not self._cost_warned:
            text = cost_warning(body, pending)
            if text is not None:
                self._cost_warned = True
                warnings.warn(text, CostWarning, stacklevel=3)
        return body, pending

    def _stream_request(self, job: JobHandle, logs: bool, deadline: float | None
                        ) -> tuple[str, dict[str, Any]]:
        """The status stream's URL and the keyword arguments of its GET."""
        url = job.status_url.rstrip("/") + "/stream"
        read = _follow.stream_read_timeout(deadline)
        return url, {"params": {"logs": "1" if logs else "0"}, "headers": self._headers_for(url),
                     "timeout": httpx.Timeout(self.timeout, read=read)}

    def _stream_opened(self, response: httpx.Response) -> None:
        log.debug("GET %s -> %d (stream)", log_path(str(response.request.url)), response.status_code)
        try:
            _follow.check_stream_answer(response)
        except _follow.StreamUnavailable as exc:
            if exc.permanent:
                self._stream_ok = False
            raise

    # -- answers -----------------------------------------------------------------------------

    def _job_from_submit(self, response: httpx.Response) -> JobT:
        if response.status_code >= 400:
            raise error_for_response(response)
        body = read_json(response, "submit")
        urls = job_urls(body, base_url=self.base_url, app=self.app, status_code=response.status_code)
        log.debug("submitted request %s", urls["request_id"])
        return self._make_job(**urls)

    @staticmethod
    def _status_from(response: httpx.Response, job: JobHandle) -> Status:
        if response.status_code >= 400:
            raise error_for_response(response, job.request_id)
        body = read_json(response, "status", job.request_id)
        try:
            return parse_status(body)
        except ValueError as exc:
            raise QueueHTTPError(response.status_code, f"odd status answer: {exc}",
                                 request_id=job.request_id, url=strip_query(job.status_url)) from None

    def _result_from(self, response: httpx.Response, job: JobHandle, *,
                     logs: list[LogEntry] | None = None,
                     metrics: Mapping[str, Any] | None = None,
                     fetch_logs: Callable[[], list[LogEntry] | None] | None = None) -> InpaintResult:
        if response.status_code >= 400:
            raise result_error(response, job.request_id)
        body = read_json(response, "result", job.request_id)
        if not isinstance(body, Mapping):
            raise QueueHTTPError(response.status_code, f"result is not a JSON object: {str(body)[:120]}",
                                 request_id=job.request_id, url=strip_query(job.response_url))
        return InpaintResult(body, request_id=job.request_id, logs=logs, metrics=metrics,
                             fetch=self._fetch_sync, afetch=self._fetch_async,
                             fetch_logs=fetch_logs)

    @staticmethod
    def _cancel_from(response: httpx.Response, job: JobHandle) -> str:
        outcome = cancel_outcome(response)
        if outcome is None:
            raise error_for_response(response, job.request_id)
        return outcome

    # -- image download (results): per flavour -----------------------------------------------

    def _fetch_sync(self, url: str) -> bytes:
        raise NotImplementedError

    async def _fetch_async(self, url: str) -> bytes:
        raise NotImplementedError
