"""Pure helpers shared by :class:`~fluxnb.client.QueueClient` and its async twin: no I/O here.

Request building (URLs, headers, query parameters), key resolution, the retry decision, and the
mapping of an ``httpx.Response`` to fluxnb's error tree. The clients only add the I/O around them.
"""

from __future__ import annotations

import json
import os
import random
import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx

from . import protocol
from ._version import __version__
from .errors import (
    CredentialsError,
    FluxnbError,
    JobCancelledError,
    JobFailedError,
    QueueHTTPError,
    ValidationError,
)
from .protocol import LogEntry

__all__ = [
    "USER_AGENT",
    "Secret",
    "auth_headers",
    "cancel_outcome",
    "clean_key",
    "error_for_response",
    "extra_submit_headers",
    "fal_env_key",
    "is_fal_url",
    "job_urls",
    "merge_logs",
    "read_json",
    "resolve_key",
    "result_error",
    "retry_delay",
    "same_host",
    "strip_query",
    "transport_error_retryable",
]

USER_AGENT = f"fluxnb/{__version__}"

#: Hosts that belong to fal.ai: only these ever get the user's FAL_KEY implicitly.
_FAL_DOMAINS = ("fal.run", "fal.ai", "falrun.com", "fal.media")

#: Transport errors after which a request surely never reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: Transport errors that retrying cannot fix.
_PERMANENT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.ProxyError)


class Secret:
    """Holds an API key so that ``repr``/``str``/formatting never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickle a key into a saved object
        raise TypeError("a fluxnb key cannot be pickled")


def host_of(url: str) -> str:
    return (urllib.parse.urlsplit(url).hostname or "").lower()


def is_fal_url(url: str) -> bool:
    """True when ``url`` points at fal.ai's infrastructure (``queue.fal.run``, ``rest.fal.ai``, ...)."""
    host = host_of(url)
    return any(host == d or host.endswith("." + d) for d in _FAL_DOMAINS)


def same_host(url: str, other: str) -> bool:
    """Same scheme, host and port: the origin a key was meant for."""
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(other)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def clean_key(value: object, source: str) -> str:
    """``value`` without surrounding whitespace, or a :class:`CredentialsError` that names
    ``source`` (``"key="``, ``"FLUXNB_KEY"``, ...) and never the value.

    A key is printable ASCII: it travels in an HTTP header, so a character outside that range
    (a typographic quote, a line break inside) could only fail later with the key in the message.

    >>> clean_key("class-secret\\n", "FLUXNB_KEY")
    'class-secret'
    """
    what = f"the key in {source}" if source.isupper() else f"the key passed as {source}"
    if not isinstance(value, str):
        raise CredentialsError(f"{what} must be a string, not {type(value).__name__}")
    key = value.strip()
    if not key:
        raise CredentialsError(f"{what} is empty (nothing but whitespace): set it to the key itself, "
                               "or leave it unset")
    if not key.isascii():
        raise CredentialsError(f"{what} contains a non-ASCII character (a key is printable ASCII; "
                               "typographic quotes often come with a copy from a web page or a "
                               "document): copy the key again. The key is not shown here.")
    if not key.isprintable():
        raise CredentialsError(f"{what} contains a control character inside it (a line break or a "
                               "tab: a key is one line of printable ASCII): copy the key again. "
                               "The key is not shown here.")
    return key


def fal_env_key(environ: Mapping[str, str] | None = None) -> str | None:
    """fal.ai's key from the environment, as fal-client reads it: ``FAL_KEY``, else
    ``FAL_KEY_ID:FAL_KEY_SECRET``; None when neither is set. Half of the pair is an error naming
    both variables (``connect()`` and the client use this one rule)."""
    env = os.environ if environ is None else environ
    if env.get("FAL_KEY"):
        return clean_key(env["FAL_KEY"], "FAL_KEY")
    key_id, secret = env.get("FAL_KEY_ID"), env.get("FAL_KEY_SECRET")
    if key_id and secret:
        return f"{clean_key(key_id, 'FAL_KEY_ID')}:{clean_key(secret, 'FAL_KEY_SECRET')}"
    if key_id or secret:
        have, lack = ("FAL_KEY_ID", "FAL_KEY_SECRET") if key_id else ("FAL_KEY_SECRET", "FAL_KEY_ID")
        raise CredentialsError(
            f"{have} is set but {lack} is not: fal's key is the pair FAL_KEY_ID + FAL_KEY_SECRET, "
            f"or one FAL_KEY='<key_id>:<key_secret>'. Set {lack} too (or FAL_KEY), or unset {have}.")
    return None


def resolve_key(base_url: str, key: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The key to send, stripped of surrounding whitespace: ``key`` if given (``""`` means none);
    else fal's key (:func:`fal_env_key`) for fal's hosts only, and ``FLUXNB_KEY`` for any other
    host. A user's fal key is never sent to a host that is not fal's unless passed explicitly.
    An unusable key is a :class:`CredentialsError` naming where it came from, never its value."""
    if key is not None:
        return clean_key(key, "key=") if key != "" else None
    env = os.environ if environ is None else environ
    if is_fal_url(base_url):
        return fal_env_key(env)
    value = env.get("FLUXNB_KEY")
    return clean_key(value, "FLUXNB_KEY") if value else None


def auth_headers(secret: Secret | None) -> dict[str, str]:
    return {"Authorization": f"Key {secret.reveal()}"} if secret is not None else {}


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
        err = ValidationError([dict(d) for d in detail])
        err.status_code = 422  # type: ignore[attr-defined]
        err.detail = detail  # type: ignore[attr-defined]
        err.error_type = error_type  # type: ignore[attr-defined]
        err.request_id = request_id  # type: ignore[attr-defined]
        return err
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
