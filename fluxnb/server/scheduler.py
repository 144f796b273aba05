"""Which queued job runs next: the one place that decides (fal's order today: priority, then
arrival). A fair scheduler (turns per owner, quotas) replaces :class:`FifoScheduler` without
touching the job service's state changes or the routes.

>>> from dataclasses import dataclass
>>> @dataclass(eq=False)
... class Item:
...     priority: int
...     seq: int
...     owner: str | None = None
>>> queue: FifoScheduler[Item] = FifoScheduler()
>>> low, first, second = Item(1, 1), Item(0, 2), Item(0, 3)
>>> for item in (low, first, second):
...     queue.add(item)
>>> queue.position(second), queue.next() is first, len(queue)
(1, True, 2)
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["FifoScheduler", "Schedulable"]


class Schedulable(Protocol):
    """What a scheduler may look at: ``priority`` (0 = normal, 1 = low), the arrival number
    ``seq`` and the ``owner`` (None until per-user identity exists)."""

    @property
    def priority(self) -> int: ...

    @property
    def seq(self) -> int: ...

    @property
    def owner(self) -> str | None: ...


JobT = TypeVar("JobT", bound=Schedulable)


class FifoScheduler(Generic[JobT]):
    """The queue in run order: priority first, then arrival. Not thread-safe: the job service
    calls it with its lock held."""

    def __init__(self) -> None:
        self._queue: list[JobT] = []

    def add(self, job: JobT) -> None:
        """Queue ``job`` behind every job of its priority that arrived before it."""
        bisect.insort(self._queue, job, key=_order)

    def remove(self, job: JobT) -> None:
        """Take ``job`` out of the queue (cancelled or timed out); a no-op when it is not in it."""
        try:
            self._queue.remove(job)
        except ValueError:
            pass

    def next(self) -> JobT | None:
        """Take the job that runs next out of the queue, or None when the queue is empty."""
        return self._queue.pop(0) if self._queue else None

    def position(self, job: JobT) -> int:
        """0-based place of ``job`` in the run order (0 = next); 0 when it is not queued."""
        try:
            return self._queue.index(job)
        except ValueError:
            return 0

    def __iter__(self) -> Iterator[JobT]:
        """The queued jobs in run order (a copy: the caller may remove while iterating)."""
        return iter(list(self._queue))

    def __len__(self) -> int:
        return len(self._queue)


def _order(job: Schedulable) -> tuple[int, int]:
    return (job.priority, job.seq)
