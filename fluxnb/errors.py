"""fluxnb's one error tree.

::

    FluxnbError
    ├── ValidationError (also ValueError)   bad input, found before any network call or by the server (422)
    │   └── MaskMismatchError               the mask's aspect ratio (or size) is not the image's
    ├── SweepTooLargeError (also ValueError) a sweep would send more jobs than ``max_jobs``
    ├── CredentialsError (also ValueError)  a key that cannot be used, or would go to the wrong host
    ├── TransportError                      the network failed and retries ran out (wraps the httpx error)
    ├── EventLoopError (also RuntimeError)  an async client's own transport= was used from a second event loop
    ├── QueueHTTPError                      the server answered an error status: status_code, detail, error_type
    ├── JobFailedError                      the job completed with an error: request_id, error, error_type
    │   └── JobCancelledError               ... because it was cancelled
    └── JobTimeoutError (also TimeoutError) ``run``/``wait`` gave up; the job was cancelled: request_id, timeout

No message, repr or attribute here ever holds an API key: errors are built from response bodies
and request ids, never from request headers.

>>> from fluxnb.errors import FluxnbError, JobTimeoutError
>>> issubclass(JobTimeoutError, TimeoutError) and issubclass(JobTimeoutError, FluxnbError)
True
"""  # noqa: E501 - the tree above is a diagram; its columns line up only at this width

from __future__ import annotations

from typing import Any

__all__ = [
    "CostWarning",
    "CredentialsError",
    "EventLoopError",
    "FluxnbError",
    "JobCancelledError",
    "JobFailedError",
    "JobTimeoutError",
    "MaskMismatchError",
    "QueueHTTPError",
    "SweepTooLargeError",
    "TransportError",
    "ValidationError",
]


class FluxnbError(Exception):
    """Root of every error fluxnb raises on purpose."""


class CostWarning(UserWarning):
    """A job about to be sent to fal.ai is expensive (see ``fluxnb.schema.COST_WARNING_USD``).

    Silence it with ``warnings.simplefilter("ignore", fluxnb.CostWarning)``. A warning (not a log
    line) so a notebook shows it; under this project's pytest ``filterwarnings = error`` a test
    that triggers it must expect it (``pytest.warns(CostWarning)``).
    """


class ValidationError(FluxnbError, ValueError):
    """The input does not fit the schema.

    ``errors`` holds fal-shaped items ``{"loc": ["body", field, ...], "msg": ..., "type": ...}``,
    the same list the local server returns as ``detail`` with a 422.
    """

    def __init__(self, errors: list[dict[str, Any]], *, status_code: int | None = None,
                 error_type: str | None = None, request_id: str | None = None):
        self.errors = errors
        #: 422 when the server refused the input; None when the client found the fault itself.
        self.status_code = status_code
        #: The server's ``detail`` list (the same items as ``errors``); None for a local check.
        self.detail: list[dict[str, Any]] | None = errors if status_code is not None else None
        self.error_type = error_type
        self.request_id = request_id
        super().__init__("; ".join(str(e.get("msg", e)) for e in errors) or "invalid input")

    @property
    def fields(self) -> list[str]:
        """The names of the fields at fault, e.g. ``["strength"]``."""
        return [str(e["loc"][1]) for e in self.errors if len(e.get("loc", [])) > 1]


class MaskMismatchError(ValidationError):
    """The mask and the image disagree (different aspect ratio, or different size when resizing is
    off); the message names both sizes. Built from a message (the item's ``loc`` is
    ``["body", field]``) or from a list of fal-shaped items.

    >>> MaskMismatchError("the mask is 4x4 but the image is 8x4").fields
    ['mask_url']
    """

    def __init__(self, message: str | list[dict[str, Any]], field: str = "mask_url"):
        errors = message if isinstance(message, list) else [
            {"loc": ["body", field], "msg": message, "type": "mask_mismatch"}]
        super().__init__(errors)


class SweepTooLargeError(FluxnbError, ValueError):
    """The sweep would send more jobs than ``max_jobs``; the message says how to go ahead."""


class CredentialsError(FluxnbError, ValueError):
    """A key that cannot be used (blank, non-ASCII, a control character inside, half of fal's
    ``FAL_KEY_ID``/``FAL_KEY_SECRET`` pair) or that ``connect()`` will not send where it would go.
    The message names where the key came from (``key=``, ``FLUXNB_KEY``, ``FAL_KEY``, ...), never
    the key itself. Raised when the client is built, before anything is sent."""


class EventLoopError(FluxnbError, RuntimeError):
    """An async client's transport was used from an event loop other than the one its connections
    belong to. fluxnb keeps one connection pool per loop by itself; only a ``transport=`` you
    pass is shared by every loop (make one client, with its own transport, per loop)."""


class TransportError(FluxnbError):
    """The request never got an answer (connection refused, reset, timed out) after all retries."""

    def __init__(self, message: str, *, url: str = "", attempts: int = 1):
        self.url = url
        self.attempts = attempts
        super().__init__(message)


class QueueHTTPError(FluxnbError):
    """The queue answered an error status.

    ``detail`` is the body's ``detail`` (a string, or fal's list of ``{loc, msg, type}``),
    ``error_type`` comes from the body or the ``X-Fal-Error-Type`` header.
    """

    def __init__(
        self,
        status_code: int,
        detail: Any,
        *,
        error_type: str | None = None,
        request_id: str | None = None,
        url: str = "",
    ):
        self.status_code = status_code
        self.detail = detail
        self.error_type = error_type
        self.request_id = request_id
        self.url = url
        super().__init__(self._message())

    def _message(self) -> str:
        detail = self.detail
        if isinstance(detail, list):
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        text = f"HTTP {self.status_code}"
        if self.error_type:
            text += f" ({self.error_type})"
        text += f": {detail}"
        if self.request_id:
            text += f" [request_id={self.request_id}]"
        return text


class JobFailedError(FluxnbError):
    """The job ran and completed with an error (fal has no FAILED state: COMPLETED + error)."""

    def __init__(
        self,
        request_id: str,
        error: Any,
        *,
        error_type: str | None = None,
        status_code: int | None = None,
    ):
        self.request_id = request_id
        self.error = error
        self.error_type = error_type
        self.status_code = status_code
        detail = error
        if isinstance(detail, list):
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        kind = f" ({error_type})" if error_type else ""
        super().__init__(f"job {request_id} failed{kind}: {detail}")


class JobCancelledError(JobFailedError):
    """The job was cancelled before it produced a result."""


class JobTimeoutError(FluxnbError, TimeoutError):
    """Waiting for a job took longer than ``timeout`` seconds; the job was cancelled on the server."""

    def __init__(self, request_id: str, timeout: float, *, cancelled: bool = True):
        self.request_id = request_id
        self.timeout = timeout
        self.cancelled = cancelled
        what = ("it was cancelled on the server" if cancelled else
                "it was not cancelled (it finished meanwhile, or the cancel request failed)")
        super().__init__(f"job {request_id} did not finish within {timeout:g} s; {what}")
