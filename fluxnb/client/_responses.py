"""Pure helpers around requests and answers, shared by both clients (no I/O here).

Submit headers, the retry decision, and the mapping of an ``httpx.Response`` to fluxnb's error
tree (``error_for_response``, ``result_error``, ``cancel_outcome``), the submit answer's URLs
(``job_urls``) and log merging. The clients only add the I/O around them.

>>> strip_query("https://x/a/b?fal_webhook=secret")
'https://x/a/b'
"""

from __future__ import annotations

import json
import random
import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx

from .. import protocol
from .._version import __version__
from ..errors import FluxnbError, JobCancelledError, JobFailedError, QueueHTTPError, ValidationError
from ..protocol import LogEntry

__all__ = [
    "USER_AGENT",
    "cancel_outcome",
    "error_detail",
    "error_for_response",
    "extra_submit_headers",
    "job_urls",
    "log_path",
    "merge_logs",
    "read_json",
    "result_error",
    "retry_delay",
    "strip_query",
    "transport_error_retryable",
    "url_of",
]

USER_AGENT = f"fluxnb/{__version__}"

#: Transport errors after which a request surely never reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: Transport errors that retrying cannot fix.
_PERMANENT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.ProxyError)


def strip_query(url: str) -> str:
    """``url`` without its query string (webhook URLs and the like stay out of logs and errors)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def extra_submit_headers(
    *,
    priority: str | None,
    hint: str | None,
    start_timeout: float | None,
    headers: Mapping[str, str] | None,
) -> dict[str, str]:
    """fal's optional submit headers (protocol §2), checked before anything is sent."""
    out: dict[str, str] = {}
    if priority is not None:
        if priority not in ("normal", "low"):
            raise ValueError(f"priority={priority!r} is not allowed: 'normal' or 'low'")
        out["X-Fal-Queue-Priority"] = priority
    if hint is not None:
        out["X-Fal-Runner-Hint"] = str(hint)
    if start_timeout is not None:
        if isinstance(start_timeout, bool) or not isinstance(start_timeout, (int, float)) \
                or not start_timeout > 0:
            raise ValueError(f"start_timeout={start_timeout!r} must be a number of seconds > 0")
        out["X-Fal-Request-Timeout"] = str(float(start_timeout))
    for name, value in (headers or {}).items():
        out[str(name)] = str(value)
    return out


def transport_error_retryable(exc: BaseException, *, idempotent: bool) -> bool:
    """Whether a transport failure may be retried.

    A non-idempotent request (the submit POST) is retried only when it surely never reached the
    server, so a retry cannot create a second job.
    """
    if not isinstance(exc, httpx.TransportError) or isinstance(exc, _PERMANENT) \
            or _certificate_failure(exc):
        return False
    if idempotent:
        return True
    return isinstance(exc, _NOT_SENT)


def _certificate_failure(exc: BaseException) -> bool:
    """A TLS certificate that does not verify will not verify on the next try either."""
    import ssl

    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def retry_delay(
    attempt: int,
    max_retries: int,
    *,
    response: httpx.Response | None = None,
    exc: BaseException | None = None,
    idempotent: bool = True,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before trying again after ``attempt`` (1-based) failed, or None to stop."""
    if attempt > max_retries:
        return None
    retry_after = None
    if response is not None:
        if not protocol.should_retry_status(response.status_code, response.headers):
            return None
        retry_after = protocol.retry_after_seconds(response.headers)
    elif exc is None or not transport_error_retryable(exc, idempotent=idempotent):
        return None
    return protocol.backoff_delay(attempt, retry_after=retry_after, rng=rng)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def url_of(response: httpx.Response) -> str:
    """The URL a response answered, without its query; empty when unknown."""
    try:
        return strip_query(str(response.request.url))
    except RuntimeError:
        return ""


def error_detail(response: httpx.Response) -> tuple[Any, str | None]:
    """(detail, error_type) of an error response: JSON ``detail`` or the text, body or header type."""
    body = _body(response)
    error_type = response.headers.get("x-fal-error-type")
    if isinstance(body, Mapping):
        if isinstance(body.get("error_type"), str):
            error_type = body["error_type"]
        if "detail" in body:
            return body["detail"], error_type
        if "status" in body and len(body) <= 2:
            return body["status"], error_type
        return body, error_type
    if body is not None:
        return body, error_type
    text = response.text.strip()
    if not text:
        text = response.reason_phrase or "(empty body)"
    if len(text) > 300:
        text = text[:300] + f"... ({len(text)} chars)"
    return text, error_type


def error_for_response(response: httpx.Response, request_id: str | None = None) -> FluxnbError:
    """The error an unsuccessful answer means: ValidationError for a 422 with fal's detail list,
    QueueHTTPError otherwise."""
    detail, error_type = error_detail(response)
    url = url_of(response)
    if request_id is None:
        request_id = response.headers.get("x-fal-request-id")
    if response.status_code == 422 and isinstance(detail, list) and detail and all(
        isinstance(d, Mapping) and "msg" in d for d in detail
    ):
        return ValidationError([dict(d) for d in detail], status_code=422, error_type=error_type,
                               request_id=request_id)
    return QueueHTTPError(response.status_code, detail, error_type=error_type,
                          request_id=request_id, url=url)


def read_json(response: httpx.Response, what: str, request_id: str | None = None) -> Any:
    """The JSON body of a successful answer; an odd body is a QueueHTTPError that says so."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        text = response.text.strip()
        raise QueueHTTPError(
            response.status_code,
            f"{what}: expected a JSON body, got {text[:120]!r}",
            request_id=request_id,
            url=url_of(response),
        ) from None


def job_urls(body: Any, *, base_url: str, app: str, status_code: int = 200) -> dict[str, str]:
    """request_id and the three URLs from a submit answer; URLs the server left out are built
    the way fal builds them (protocol §1)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("request_id"), str) \
            or not body["request_id"]:
        raise QueueHTTPError(status_code, f"submit answer has no request_id: {json.dumps(body)[:200]}")
    request_id = body["request_id"]
    response_url = body.get("response_url")
    if not isinstance(response_url, str) or not response_url:
        response_url = base_url.rstrip("/") + protocol.request_path(app, request_id)
    status_url = body.get("status_url")
    if not isinstance(status_url, str) or not status_url:
        status_url = response_url + "/status"
    cancel_url = body.get("cancel_url")
    if not isinstance(cancel_url, str) or not cancel_url:
        cancel_url = response_url + "/cancel"
    return {"request_id": request_id, "response_url": response_url, "status_url": status_url,
            "cancel_url": cancel_url}


def result_error(response: httpx.Response, request_id: str) -> FluxnbError:
    """What an unsuccessful result answer means.

    The job's own failure (fal returns the model's error as the result) is a JobFailedError, or a
    JobCancelledError when it was cancelled; "not finished yet", "not found" and auth problems stay
    QueueHTTPError.
    """
    detail, error_type = error_detail(response)
    code = response.status_code
    text = detail.lower() if isinstance(detail, str) else ""
    if error_type == "request_cancelled" or (code == 400 and ("cancelled" in text or "canceled" in text)):
        return JobCancelledError(request_id, detail, error_type=error_type or "request_cancelled",
                                 status_code=code)
    if code in (401, 403, 404, 405) or (code == 400 and "in progress" in text) \
            or protocol.should_retry_status(code, response.headers) and error_type is None:
        return QueueHTTPError(code, detail, error_type=error_type, request_id=request_id,
                              url=url_of(response))
    return JobFailedError(request_id, detail, error_type=error_type, status_code=code)


def cancel_outcome(response: httpx.Response) -> str | None:
    """The status string of a cancel answer: CANCELLATION_REQUESTED (2xx), ALREADY_COMPLETED (400),
    or None when the answer is an error."""
    body = _body(response)
    status = body.get("status") if isinstance(body, Mapping) else None
    if 200 <= response.status_code < 300:
        return status if isinstance(status, str) and status else "CANCELLATION_REQUESTED"
    if response.status_code == 400:
        if status == "ALREADY_COMPLETED" or status is None:
            return "ALREADY_COMPLETED"
    return None


def merge_logs(acc: list[LogEntry], new: list[LogEntry] | None) -> list[LogEntry]:
    """Logs seen so far plus a status's logs, whether the server sends all logs each time or only
    the new ones."""
    if not new:
        return acc
    if len(new) >= len(acc) and new[: len(acc)] == acc:
        return list(new)
    return acc + list(new)


def log_path(url: str) -> str:
    """The path part of a URL, for log lines (no host credentials, no query)."""
    return urllib.parse.urlsplit(url).path or "/"
