"""One request as the server keeps it: :class:`JobRecord` (inputs, state, logs, result or
error, owner, watchers), and the small helpers that fill it.

>>> JobRecord(id="r1", app="fal-ai/flux-lora/inpainting", params={}).state
'IN_QUEUE'
>>> elide_data_uri("data:image/png;base64," + "A" * 100)
'data:image/png;base64,AAAAAAAAAAAAAAAAAA... (122 chars)'
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..protocol import COMPLETED, IN_QUEUE, LogEntry

__all__ = ["JobRecord", "elide_data_uri", "now_iso"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(eq=False)
class JobRecord:
    """One request: inputs, state, logs and (once COMPLETED) a result or an error. ``owner`` is
    who submitted it (None until the server knows its users). ``restarts`` counts the server
    restarts that interrupted it while it ran (a durable server reruns such a job once)."""

    id: str
    app: str
    params: dict[str, Any]
    owner: str | None = None
    priority: int = 0
    seq: int = 0
    #: a data-URI input's encoded bytes, kept compressed while queued (the worker decodes them);
    #: None for an http(s) input, which the worker downloads
    image_data: bytes | None = None
    mask_data: bytes | None = None
    deadline: float | None = None
    state: str = IN_QUEUE
    logs: list[LogEntry] = field(default_factory=list)
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    inference_time: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    error_status: int | None = None
    error_body: dict[str, Any] | None = None
    error_headers: dict[str, str] = field(default_factory=dict)
    files_token: str | None = None
    #: what the job cost upstream (the fal gateway), in US dollars; None elsewhere
    cost_usd: float | None = None
    restarts: int = 0
    version: int = 0
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    # (loop, event, wants_logs): a watcher without logs is not woken by a new log line alone
    _watchers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event, bool]] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.state == COMPLETED and self.error is None

    def _touch(self, *, logs_only: bool = False) -> None:
        """Bump the version and wake the asyncio watchers (caller holds the service lock); for a
        new log line alone, only those that show logs (a cross-thread wake-up per step adds up)."""
        self.version += 1
        for watcher in list(self._watchers):
            loop, event, wants_logs = watcher
            if logs_only and not wants_logs:
                continue
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the watcher's loop is closed
                self._watchers.discard(watcher)


def elide_data_uri(uri: str) -> str:
    """``data:image/png;base64,iVBO... (123456 chars)`` for a long data URI; others unchanged."""
    if not uri.startswith("data:") or len(uri) <= 64:
        return uri
    return f"{uri[:40]}... ({len(uri)} chars)"
