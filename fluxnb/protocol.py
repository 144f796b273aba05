"""fal's queue protocol as pure data and functions: no I/O here.

Shared by the sync and async clients and by the local server, so both sides agree on one
definition of a status, a log line, an app id and the retry policy.

>>> parse_status({"status": "IN_QUEUE", "queue_position": 2})
Queued(position=2)
>>> split_app_id("fal-ai/flux-lora/inpainting")
('fal-ai', 'flux-lora', 'inpainting')
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUDGET_EXHAUSTED",
    "COMPLETED",
    "DEFAULT_BASE_URL",
    "IN_PROGRESS",
    "IN_QUEUE",
    "RETRY_STATUSES",
    "Completed",
    "InProgress",
    "LogEntry",
    "Queued",
    "Status",
    "backoff_delay",
    "parse_logs",
    "parse_status",
    "progress_from_logs",
    "request_path",
    "retry_after_seconds",
    "should_retry_status",
    "split_app_id",
]

#: The three job states of fal's queue (a status body's ``status``); the server uses these too.
IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"

#: fal's queue host; the client's default ``base_url``.
DEFAULT_BASE_URL = "https://queue.fal.run"

#: Statuses that mean "try again" (fal-client retries the same set; 5xx only when transient).
RETRY_STATUSES = frozenset({408, 409, 429, 502, 503, 504})

#: The ``X-Fal-Error-Type`` of a 429 that waiting cannot cure (a class server's per-session
#: budget is spent): the server sends it, the client does not retry it.
BUDGET_EXHAUSTED = "budget_exhausted"

# App ids with a namespace prefix keep it in their request URLs (fal-client's APP_NAMESPACES).
_NAMESPACES = ("workflows", "comfy")


@dataclass(frozen=True)
class LogEntry:
    """One log line of a job, as fal sends it."""

    message: str
    level: str = "INFO"
    source: str = "USER"
    timestamp: str = ""

    @classmethod
    def from_json(cls, data: Any) -> LogEntry:
        if isinstance(data, str):
            return cls(message=data)
        if not isinstance(data, Mapping):
            return cls(message=str(data))
        return cls(
            message=str(data.get("message", "")),
            level=str(data.get("level", "INFO")),
            source=str(data.get("source", "USER")),
            timestamp=str(data.get("timestamp", "")),
        )

    def to_json(self) -> dict[str, str]:
        return {"message": self.message, "level": self.level, "source": self.source,
                "timestamp": self.timestamp}


@dataclass(frozen=True)
class Queued:
    """Waiting in the queue; ``position`` 0 means next."""

    position: int


def _logs_summary(logs: list[LogEntry] | None) -> str:
    """``logs=None`` or ``logs=[12 lines, last 'step 3/24']``: short enough for ``on_update=print``."""
    if logs is None:
        return "logs=None"
    if not logs:
        return "logs=[]"
    last = logs[-1].message
    last = last if len(last) <= 60 else last[:57] + "..."
    return f"logs=[{len(logs)} line{'s' if len(logs) != 1 else ''}, last {last!r}]"


@dataclass(frozen=True)
class InProgress:
    """Running; ``logs`` is None unless logs were asked for.

    >>> InProgress([LogEntry("seed: 1"), LogEntry("step 3/24")])
    InProgress(logs=[2 lines, last 'step 3/24'])
    """

    logs: list[LogEntry] | None = None

    def __repr__(self) -> str:
        return f"InProgress({_logs_summary(self.logs)})"


@dataclass(frozen=True)
class Completed:
    """Finished. ``error`` is set when the job failed or was cancelled (fal has no FAILED state)."""

    logs: list[LogEntry] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: Any = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        parts = [_logs_summary(self.logs), f"metrics={self.metrics!r}"]
        if self.error is not None:
            parts += [f"error={self.error!r}", f"error_type={self.error_type!r}"]
        return f"Completed({', '.join(parts)})"


Status = Queued | InProgress | Completed


def parse_logs(data: Any) -> list[LogEntry] | None:
    """``logs`` from a status body: None stays None, anything else becomes LogEntry items."""
    if data is None:
        return None
    if not isinstance(data, list):
        return [LogEntry.from_json(data)]
    return [LogEntry.from_json(item) for item in data]


def parse_status(data: Mapping[str, Any]) -> Status:
    """Turn a status body into Queued / InProgress / Completed; anything else is a ValueError."""
    if not isinstance(data, Mapping):
        raise ValueError(f"status body is not a JSON object: {data!r:.80}")
    status = data.get("status")
    if status == IN_QUEUE:
        position = data.get("queue_position")
        return Queued(position=int(position) if isinstance(position, (int, float)) else 0)
    if status == IN_PROGRESS:
        return InProgress(logs=parse_logs(data.get("logs")))
    if status == COMPLETED:
        metrics = data.get("metrics")
        return Completed(
            logs=parse_logs(data.get("logs")),
            metrics=dict(metrics) if isinstance(metrics, Mapping) else {},
            error=data.get("error"),
            error_type=data.get("error_type"),
        )
    raise ValueError(f"unknown job status {status!r}")


def split_app_id(app_id: str) -> tuple[str, str, str]:
    """``owner/app[/path]`` -> (owner, app, path); a ``workflows/``/``comfy/`` prefix joins the owner."""
    parts = [p for p in app_id.strip("/").split("/") if p]
    if parts and parts[0] in _NAMESPACES:
        if len(parts) < 3:
            raise ValueError(f"app id {app_id!r} must look like {parts[0]}/owner/app[/path]")
        return f"{parts[0]}/{parts[1]}", parts[2], "/".join(parts[3:])
    if len(parts) < 2:
        raise ValueError(f"app id {app_id!r} must look like owner/app[/path]")
    return parts[0], parts[1], "/".join(parts[2:])


def request_path(app_id: str, request_id: str) -> str:
    """The path of a request's result URL: ``/{owner}/{app}/requests/{id}`` (no sub-path)."""
    owner, app, _ = split_app_id(app_id)
    return f"/{owner}/{app}/requests/{request_id}"


def should_retry_status(status_code: int, headers: Mapping[str, str] | None = None) -> bool:
    """Whether an answer with this status is worth another try.

    408/409/429/502/503/504 are retried; a 504 that says the caller's own start timeout ran out
    (``X-Fal-Request-Timeout-Type: user``) is not, nor is a 429 whose ``X-Fal-Error-Type`` is
    :data:`BUDGET_EXHAUSTED` (a spent budget does not come back by waiting); no other 4xx is.

    >>> should_retry_status(429), should_retry_status(429, {"X-Fal-Error-Type": BUDGET_EXHAUSTED})
    (True, False)
    """
    if status_code not in RETRY_STATUSES:
        return False
    if status_code in (429, 504) and headers is not None:
        lowered = {k.lower(): v for k, v in headers.items()}
        if status_code == 504 and lowered.get("x-fal-request-timeout-type"):
            return False
        if status_code == 429 and lowered.get("x-fal-error-type", "").strip() == BUDGET_EXHAUSTED:
            return False
    return True


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The wait a ``Retry-After`` header asks for (seconds or an HTTP date), or None."""
    value = None
    for key, item in headers.items():
        if key.lower() == "retry-after":
            value = item.strip()
            break
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.25,
    cap: float = 10.0,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to sleep before retry number ``attempt`` (1-based).

    Exponential (``base * 2**(attempt-1)``) with jitter x0.5-1.5, capped at ``cap``; a server's
    ``Retry-After`` wins when it is longer, up to 60 s.
    """
    draw = rng.uniform(0.5, 1.5) if rng is not None else random.uniform(0.5, 1.5)
    growth: float = 2 ** (attempt - 1)  # int ** int is typed Any (a negative power is a float)
    delay = min(cap, base * growth) * draw
    if retry_after is not None:
        delay = max(delay, min(retry_after, 60.0))
    return delay


_PROGRESS = re.compile(r"(?<![\w.])(\d+)\s*/\s*(\d+)(?![\w.])")


def progress_from_logs(logs: Iterable[LogEntry] | None) -> tuple[int, int] | None:
    """The latest ``done/total`` a log line reports (``step 3/28``, tqdm's ``3/28 [..]``), or None.

    >>> progress_from_logs([LogEntry("step 3/28"), LogEntry("step 4/28")])
    (4, 28)
    """
    found = None
    for entry in logs or ():
        for match in _PROGRESS.finditer(entry.message):
            done, total = int(match.group(1)), int(match.group(2))
            if 0 < total and 0 <= done <= total:
                found = (done, total)
    return found
