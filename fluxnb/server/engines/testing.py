"""A fake :class:`~fluxnb.server.engines.JobContext` for calling an engine directly: in tests,
benchmarks, or while writing an engine, without a server.

It logs what the server's context logs (``step 3/8``, ``image 2/2: step 3/8``), keeps every line
and can play a cancel: by hand with :meth:`RecordingContext.cancel`, or after ``cancel_after``
steps.

>>> from fluxnb.server.engines import EngineCancelled
>>> ctx = RecordingContext(cancel_after=2)
>>> ctx.step(1, 4, image_index=1, num_images=2)
>>> ctx.step(2, 4)
Traceback (most recent call last):
...
fluxnb.server.engines.base.EngineCancelled: cancelled after 2 steps
>>> ctx.lines, ctx.steps
(['image 2/2: step 1/4', 'step 2/4'], 2)
"""

from __future__ import annotations

import threading

from .base import EngineCancelled

__all__ = ["RecordingContext"]


class RecordingContext:
    """Records ``log`` lines (``lines``, and ``entries`` with their levels) and counts ``steps``;
    cancelled once :meth:`cancel` was called or ``cancel_after`` steps were reported."""

    def __init__(self, *, cancel_after: int | None = None):
        self.lines: list[str] = []
        self.entries: list[tuple[str, str]] = []  # (level, message)
        self.steps = 0
        self.cancel_after = cancel_after
        self._cancel = threading.Event()

    def log(self, message: str, level: str = "INFO") -> None:
        self.lines.append(message)
        self.entries.append((level, message))

    def step(self, done: int, total: int, *, image_index: int = 0, num_images: int = 1) -> None:
        self.steps += 1
        prefix = f"image {image_index + 1}/{num_images}: " if num_images > 1 else ""
        self.log(f"{prefix}step {done}/{total}")
        self.check_cancelled()

    def cancel(self) -> None:
        """Request a cancel, as ``PUT .../cancel`` would (thread-safe)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set() or (self.cancel_after is not None
                                         and self.steps >= self.cancel_after)

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise EngineCancelled(f"cancelled after {self.steps} steps")
