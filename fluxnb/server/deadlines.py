"""The queued jobs' start deadlines (``X-Fal-Request-Timeout``): a heap with lazy deletion, so
that noting a deadline and failing the expired jobs cost O(log N) per job however many expire
together.

The job service holds one :class:`Deadlines` under its lock and its timeout thread asks it,
with the time now, which jobs are due; a job that started, was cancelled or already failed
stays in the heap as a stale entry and is dropped when it surfaces (or when stale entries
outnumber the queued jobs, which rebuilds the heap).

>>> from fluxnb.server.record import JobRecord
>>> heap = Deadlines()
>>> late, soon = (JobRecord(id=i, app="a", params={}, seq=n, deadline=d)
...               for i, n, d in (("late", 1, 50.0), ("soon", 2, 10.0)))
>>> heap.push(late, queued=2); heap.push(soon, queued=2)
>>> [job.id for job in heap.due(now=20.0, limit=32)], heap.wait(now=20.0)
(['soon'], 30.0)
"""

from __future__ import annotations

import heapq

from ..protocol import IN_QUEUE
from .record import JobRecord

__all__ = ["WAIT_MAX", "Deadlines"]

#: The longest wait :meth:`Deadlines.wait` gives: the timeout thread wakes at least this often
#: (threading's waits overflow on huge timeouts).
WAIT_MAX = 3600.0


class Deadlines:
    """The deadlines of queued jobs, soonest first (not thread-safe: the caller locks)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, JobRecord]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, job: JobRecord, *, queued: int) -> None:
        """Note ``job``'s deadline; ``queued`` (how many jobs wait now) decides when the heap
        is rebuilt from the still-queued entries (amortised O(log N) per job)."""
        assert job.deadline is not None
        if len(self._heap) > 2 * queued + 64:
            self._heap = [e for e in self._heap if e[2].state == IN_QUEUE]
            heapq.heapify(self._heap)
        heapq.heappush(self._heap, (job.deadline, job.seq, job))

    def due(self, now: float, limit: int) -> list[JobRecord]:
        """Up to ``limit`` still-queued jobs whose deadline is at or before ``now``, soonest
        first, taken out of the heap (stale entries on the way are dropped)."""
        heap = self._heap
        out: list[JobRecord] = []
        while heap and heap[0][0] <= now and len(out) < limit:
            job = heapq.heappop(heap)[2]
            if job.state == IN_QUEUE:
                out.append(job)
        return out

    def wait(self, now: float) -> float | None:
        """Seconds from ``now`` until the next deadline (0: one is due; at most
        :data:`WAIT_MAX`), or None when no deadline is left."""
        if not self._heap:
            return None
        return min(max(0.0, self._heap[0][0] - now), WAIT_MAX)
