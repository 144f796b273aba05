"""Following a job, the I/O-free part: deadlines, stream signals, SSE event -> Status, drain.

Both clients follow a job the same way: the SSE status stream while the server offers one (each
read bounded by the deadline, so a timeout is honoured between keep-alives), else polling. The
loops that do the I/O live in ``_sync`` and ``_async``; what they share is here.

>>> check_timeout(None), poll_wait(0.25, None)
(None, 0.25)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx

from ..protocol import Completed, LogEntry, Queued, Status, parse_status
from ._responses import merge_logs
from .sse import SSEEvent

__all__ = [
    "DEADLINE_SLICE",
    "INTERRUPT_CANCEL_TIMEOUT",
    "STREAM_IDLE",
    "Deadline",
    "StreamSilent",
    "StreamUnavailable",
    "Tracker",
    "adrain",
    "check_deadline",
    "check_stream_answer",
    "check_stream_deadline",
    "check_timeout",
    "deadline_after",
    "drain",
    "event_status",
    "logs_of",
    "note_interrupt",
    "poll_wait",
    "stream_read_timeout",
    "streams_logs",
]

log = logging.getLogger("fluxnb.client")

#: Stream answers that mean "this server has no SSE status stream": fall back to polling.
_NO_STREAM = (404, 405, 501)
#: ... and of those, the ones worth remembering for the client's lifetime.
_NO_STREAM_EVER = (405, 501)
#: Longest silence on an open status stream before polling takes over; fal sends a comment
#: every 15 s, so only a broken stream stays silent this long.
STREAM_IDLE = 40.0
#: With a deadline, no single stream read waits longer than this; a silent stream is then
#: reopened, so a timeout is honoured within this many seconds even between keep-alives.
DEADLINE_SLICE = 2.0
#: Seconds the best-effort cancel after a Ctrl-C (or task cancellation) may take; one try.
INTERRUPT_CANCEL_TIMEOUT = 3.0
# The server closes the stream right after COMPLETED. Reading that end keeps the connection in
# the pool, so the result GET that follows reuses it instead of paying a new TCP + TLS handshake.
_DRAIN_LIMIT = 1 << 20


class Deadline(Exception):
    """Internal: the wait's deadline passed."""


class StreamSilent(Exception):
    """Internal: the stream was quiet for a slice of the deadline; reopen it."""


class StreamUnavailable(Exception):
    """Internal: the SSE stream cannot be used (not offered, or broke); poll instead.
    ``permanent``: the server said it never offers one (stop trying for this client)."""

    def __init__(self, permanent: bool = False):
        super().__init__()
        self.permanent = permanent


def check_timeout(timeout: float | None) -> None:
    """A ValueError unless ``timeout`` is None or a number of seconds > 0."""
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0):
        raise ValueError(f"timeout={timeout!r} must be a number of seconds > 0, or None")


def deadline_after(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` instant ``timeout`` seconds from now (checked), or None."""
    check_timeout(timeout)
    return None if timeout is None else time.monotonic() + timeout


def streams_logs(logs: bool | None, on_update: object) -> bool:
    """Whether ``wait``/``run`` follow with log lines: ``logs`` when given, else only for an
    ``on_update`` callback. Without them the server wakes the client on state changes only
    (three events a job, not one per step), which is most of a plain ``run``'s client CPU.

    >>> streams_logs(None, None), streams_logs(None, print), streams_logs(True, None)
    (False, True, True)
    """
    return on_update is not None if logs is None else bool(logs)


def logs_of(status: Status) -> list[LogEntry] | None:
    """The log lines a status carries (a Queued status has none)."""
    return None if isinstance(status, Queued) else status.logs


def check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise Deadline


def check_stream_deadline(deadline: float | None, read_timeout: float) -> None:
    """After each stream chunk: Deadline when time is up; StreamSilent (reopen with a shorter
    read timeout) when the next read could block past the deadline."""
    if deadline is None:
        return
    now = time.monotonic()
    if now >= deadline:
        raise Deadline
    if now + read_timeout > deadline + 0.05:
        raise StreamSilent


def stream_read_timeout(deadline: float | None) -> float:
    """Each read waits at most until the deadline (in slices); without one, a server silent for
    longer than STREAM_IDLE (fal sends a keep-alive every 15 s) is given up on for polling."""
    if deadline is None:
        return STREAM_IDLE
    return max(0.01, min(DEADLINE_SLICE, deadline - time.monotonic() + 0.05))


def poll_wait(interval: float, deadline: float | None) -> float:
    if deadline is None:
        return interval
    return max(0.0, min(interval, deadline - time.monotonic()))


def check_stream_answer(response: httpx.Response) -> None:
    """StreamUnavailable unless ``response`` opened an SSE status stream."""
    if response.status_code in _NO_STREAM:
        raise StreamUnavailable(permanent=response.status_code in _NO_STREAM_EVER)
    ctype = response.headers.get("content-type", "")
    if response.status_code >= 300 or "text/event-stream" not in ctype:
        raise StreamUnavailable


def event_status(event: SSEEvent) -> Status | None:
    """The Status an SSE event carries; None (logged) for one that cannot be read."""
    try:
        return parse_status(json.loads(event.data))
    except ValueError:
        log.debug("ignoring an unreadable status event (%d chars)", len(event.data))
        return None


def drain(chunks: Iterator[str]) -> None:
    """Read the rest of a finished stream (up to a limit) so its connection goes back to the pool."""
    read = 0
    try:
        for chunk in chunks:
            read += len(chunk)
            if read > _DRAIN_LIMIT:
                return
    except httpx.HTTPError:
        pass


async def adrain(chunks: AsyncIterator[str]) -> None:
    """Async twin of :func:`drain`."""
    read = 0
    try:
        async for chunk in chunks:
            read += len(chunk)
            if read > _DRAIN_LIMIT:
                return
    except httpx.HTTPError:
        pass


class Tracker:
    """What ``wait`` keeps of the statuses it sees: the logs (merged) and the final metrics."""

    __slots__ = ("logs", "metrics")

    def __init__(self) -> None:
        self.logs: list[LogEntry] = []
        self.metrics: Mapping[str, Any] = {}

    def see(self, status: Status) -> bool:
        """Take in one status; True when it is the last one (Completed)."""
        if isinstance(status, Completed):
            self.logs = merge_logs(self.logs, status.logs)
            self.metrics = status.metrics
            return True
        new = logs_of(status)
        if new:
            self.logs = merge_logs(self.logs, new)
        return False


def note_interrupt(exc: BaseException, request_id: str, outcome: str | None) -> None:
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
    # an interrupt is a built-in exception: these two are set on it, the one way to carry them
    vars(exc).update(request_id=request_id, cancel_outcome=outcome)
