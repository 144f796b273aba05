"""The orders the class load simulator (``tests/server/loadsim.py``) compares the server's own
fair order with: "sfq", fair queuing without the idle credit (the order before it), and "fifo",
first come, first served (before fair turns at all).

>>> other_order("sfq").add  # doctest: +ELLIPSIS
<bound method FairScheduler.add of ...>
"""

from __future__ import annotations

import bisect
from typing import Any

from fluxnb.server.replicas import input_size
from fluxnb.server.scheduler import FairScheduler, work_units

__all__ = ["other_order"]


def other_order(name: str) -> Any:
    """A fresh queue in the order ``name`` ("sfq" or "fifo") for the job service to use."""
    if name == "sfq":
        return FairScheduler(_cost, idle_credit=0.0)
    if name == "fifo":
        return _Fifo()
    raise ValueError(f"scheduler must be 'fair', 'sfq' or 'fifo', not {name!r}")


def _cost(job: Any) -> float:
    return work_units(job.params, input_size(job.image_data))


class _Fifo:
    """First come, first served (``priority`` first): the order before the fair scheduler, for
    the benchmark's "before" figures. Linear time; a few hundred jobs only."""

    def __init__(self) -> None:
        self._jobs: list[Any] = []
        self._held = False

    def add(self, job: Any) -> None:
        bisect.insort(self._jobs, job, key=lambda j: (j.priority, j.seq))

    def remove(self, job: Any) -> None:
        if job in self._jobs:
            self._jobs.remove(job)

    def next(self) -> Any:
        return None if self._held or not self._jobs else self._jobs.pop(0)

    def position(self, job: Any) -> int:
        return self._jobs.index(job)

    def pause(self, owner: str | None = None) -> None:
        self._held = True

    def resume(self, owner: str | None = None) -> None:
        self._held = False

    def paused(self) -> dict[str, Any]:
        return {"queue": self._held, "owners": []}

    def __iter__(self) -> Any:
        return iter(list(self._jobs))

    def __len__(self) -> int:
        return len(self._jobs)
