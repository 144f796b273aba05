"""Which queued job runs next: the one place that decides. :class:`FairScheduler` gives turns
per owner by virtual finish tags (weighted fair queuing), ``priority`` first (fal's
``X-Fal-Queue-Priority: low`` runs after every normal job), and the person with the least recent
work goes first: one who has had no turn for a while starts ``idle_credit`` turns behind the
clock, so ahead of the owners who keep the queue full. One owner (the laptop server's None) is
plain FIFO.

>>> from dataclasses import dataclass
>>> @dataclass(eq=False)
... class Item:
...     priority: int
...     seq: int
...     owner: str | None = None
>>> queue: FairScheduler[Item] = FairScheduler()
>>> flood = [Item(0, i, "bob") for i in range(1, 4)]
>>> for item in flood:
...     queue.add(item)
>>> quiet = Item(0, 4, "ada")
>>> queue.add(quiet)
>>> queue.position(quiet), queue.next() is flood[0], queue.next() is quiet, len(queue)
(1, True, True, 2)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

from ..schema import INPUT_FIELDS, resolve_image_size

__all__ = ["FairScheduler", "FifoScheduler", "Schedulable", "work_units"]

_DEFAULT_STEPS = int(INPUT_FIELDS["num_inference_steps"].default or 28)
_DEFAULT_IMAGES = int(INPUT_FIELDS["num_images"].default or 1)
_ONE_MP = (1000, 1000)
_MIN_COST = 1e-9


class Schedulable(Protocol):
    """What a scheduler may look at: ``priority`` (0 = normal, 1 = low), the arrival number
    ``seq`` and the ``owner`` (None: the one owner of a laptop server)."""

    @property
    def priority(self) -> int: ...

    @property
    def seq(self) -> int: ...

    @property
    def owner(self) -> str | None: ...


JobT = TypeVar("JobT", bound=Schedulable)
# (priority, virtual finish tag, arrival seq, the scheduler's own number): unique, sortable
_Key = tuple[int, float, int, int]


def work_units(params: Mapping[str, Any], input_size: tuple[int, int] | None = None) -> float:
    """A job's cost: megapixels x steps x images. The size is ``image_size`` when given, else
    ``input_size`` (the decoded input), else 1 MP; steps and images default as fal's do.

    >>> round(work_units({"image_size": "square", "num_inference_steps": 10, "num_images": 2}), 3)
    5.243
    >>> work_units({})
    28.0
    """
    try:
        width, height = resolve_image_size(params.get("image_size"), input_size or _ONE_MP)
        megapixels = width * height / 1e6
    except (KeyError, TypeError, ValueError, AttributeError):
        megapixels = 1.0
    steps = _positive(params.get("num_inference_steps"), _DEFAULT_STEPS)
    images = _positive(params.get("num_images"), _DEFAULT_IMAGES)
    cost = megapixels * steps * images
    return cost if math.isfinite(cost) and cost > 0 else 1.0


def _positive(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


class FairScheduler(Generic[JobT]):
    """The queue in run order: priority, then each owner's virtual finish tag, then arrival.

    A job's tag is ``start + cost`` (``cost(job)``, default 1) with ``start = max(virtual time -
    idle_credit x a typical cost, the owner's last queued or last served tag)``; the virtual time
    is the largest tag dispatched so far and a typical cost is an average of recent arrivals'.
    So an owner with 100 jobs queued takes turns with the others, and one who has had no work in
    the last ``idle_credit`` rounds goes before their next jobs (least recent work first), for at
    most ``idle_credit`` turns' worth before taking turns again: the busy owners still get a turn
    in every round, and every person about one share. ``idle_credit=0`` is self-clocked fair
    queuing as before (a returning owner ties with the backlogged ones and runs after them).
    Tags are fixed when a job is added, so a position is the dispatch order as things stand.
    Positions are ranks in sorted lists (C-level bisect): add, remove, next and position are
    O(log N) plus a memmove.

    Pauses: a paused owner's jobs stay queued but move behind every other job, and ``next()``
    skips them; their position counts every runnable job first, then the held ones in their
    order (what would run if nothing else changed and the pause were lifted last). On resume
    they are tagged again from the current virtual time, as if they had just arrived (no burst
    of catch-up turns). A paused queue dispatches nothing; positions stay the order it will
    resume in. Not thread-safe: the job service calls it with its lock held.
    """

    def __init__(self, cost: Callable[[JobT], float] | None = None,
                 idle_credit: float = 1.0) -> None:
        if not (math.isfinite(idle_credit) and idle_credit >= 0):
            raise ValueError(f"idle_credit must be a finite number >= 0, not {idle_credit!r}")
        self._cost = cost
        self._credit = float(idle_credit)
        self._typical = 0.0  # an average of recent arrivals' costs (0: none yet)
        self._ready = _SortedKeys()
        self._held = _SortedKeys()
        self._jobs: dict[int, JobT] = {}
        self._where: dict[JobT, tuple[_Key, bool]] = {}  # job -> (key, held)
        self._by_owner: dict[str | None, dict[JobT, None]] = {}
        self._clock: dict[int, float] = {}  # per priority: the largest tag dispatched
        self._last: dict[tuple[int, str | None], float] = {}  # per (priority, owner) queued
        self._served: dict[tuple[int, str | None], float] = {}  # ... and last dispatched
        self._count: dict[tuple[int, str | None], int] = {}
        self._paused_owners: set[str] = set()
        self._paused_all = False
        self._n = 0

    # -- the queue ------------------------------------------------------------------------

    def add(self, job: JobT, *, credit: bool = True) -> None:
        """Queue ``job`` at its owner's next turn (behind the owner's earlier jobs); with
        ``credit=False`` no earlier than the current virtual time."""
        key = self._tag(job, credit)
        held = job.owner is not None and job.owner in self._paused_owners
        (self._held if held else self._ready).add(key)
        self._jobs[key[3]] = job
        self._where[job] = (key, held)
        self._by_owner.setdefault(job.owner, {})[job] = None

    def remove(self, job: JobT) -> None:
        """Take ``job`` out of the queue (cancelled or timed out); a no-op when it is not in it."""
        entry = self._where.get(job)
        if entry is not None:
            key, held = entry
            (self._held if held else self._ready).discard(key)
            self._forget(job, key)

    def next(self) -> JobT | None:
        """Take the job that runs next out of the queue; None when none may run (empty, every
        queued owner paused, or the queue paused)."""
        if self._paused_all or not self._ready:
            return None
        key = self._ready.pop_first()
        job = self._jobs[key[3]]
        self._clock[key[0]] = max(self._clock.get(key[0], 0.0), key[1])
        self._served[(key[0], job.owner)] = key[1]
        self._forget(job, key)
        return job

    def position(self, job: JobT) -> int:
        """How many queued jobs go before ``job`` in the current order (0 = next; a held job
        counts every runnable one first); 0 when it is not queued."""
        entry = self._where.get(job)
        if entry is None:
            return 0
        key, held = entry
        if held:
            return len(self._ready) + self._held.rank(key)
        return self._ready.rank(key)

    # -- pauses ---------------------------------------------------------------------------

    def pause(self, owner: str | None = None) -> None:
        """Hold ``owner``'s queued (and later) jobs; None holds the whole queue."""
        if owner is None:
            self._paused_all = True
            return
        self._paused_owners.add(owner)
        for job in list(self._by_owner.get(owner, {})):
            key, held = self._where[job]
            if not held:
                self._ready.discard(key)
                self._held.add(key)
                self._where[job] = (key, True)

    def resume(self, owner: str | None = None) -> None:
        """Let ``owner``'s jobs (None: the queue) run again; an owner's are tagged anew."""
        if owner is None:
            self._paused_all = False
            return
        self._paused_owners.discard(owner)
        jobs = sorted(self._by_owner.get(owner, {}), key=lambda j: self._where[j][0])
        for job in jobs:
            self.remove(job)
        for job in jobs:
            self.add(job, credit=False)

    def paused(self) -> dict[str, Any]:
        """``{"queue": bool, "owners": sorted names held}``."""
        return {"queue": self._paused_all, "owners": sorted(self._paused_owners)}

    def __iter__(self) -> Iterator[JobT]:
        """The queued jobs in run order, held ones last (a copy: the caller may remove)."""
        return iter([self._jobs[key[3]] for key in [*self._ready.keys(), *self._held.keys()]])

    def __len__(self) -> int:
        return len(self._ready) + len(self._held)

    # -- internals ------------------------------------------------------------------------

    def _tag(self, job: JobT, credit: bool = True) -> _Key:
        slot = (job.priority, job.owner)
        cost = float(self._cost(job)) if self._cost is not None else 1.0
        if not (math.isfinite(cost) and cost > _MIN_COST):
            cost = 1.0 if not math.isfinite(cost) else _MIN_COST
        self._typical = cost if not self._typical else self._typical + (cost - self._typical) / 32
        clock = self._clock.get(job.priority, 0.0)
        start = clock - self._credit * self._typical if credit else clock
        earliest = self._last.get(slot, self._served.get(slot, -math.inf))
        finish = max(start, earliest) + cost
        self._last[slot] = finish
        self._count[slot] = self._count.get(slot, 0) + 1
        self._n += 1
        return (job.priority, finish, job.seq, self._n)

    def _forget(self, job: JobT, key: _Key) -> None:
        del self._jobs[key[3]], self._where[job]
        mine = self._by_owner[job.owner]
        del mine[job]
        if not mine:
            del self._by_owner[job.owner]
        slot = (job.priority, job.owner)
        self._count[slot] -= 1
        if not self._count[slot]:  # nothing queued: the owner's next job starts at the clock
            del self._count[slot], self._last[slot]


class _SortedKeys:
    """Unique keys kept sorted (C-level bisect), stored smallest-last so taking the first is
    O(1); negated so the list itself is ascending."""

    def __init__(self) -> None:
        self._neg: list[tuple[int, float, int, int]] = []

    def add(self, key: _Key) -> None:
        bisect.insort(self._neg, _negate(key))

    def discard(self, key: _Key) -> None:
        neg = _negate(key)
        i = bisect.bisect_left(self._neg, neg)
        if i < len(self._neg) and self._neg[i] == neg:
            del self._neg[i]

    def pop_first(self) -> _Key:
        return _negate(self._neg.pop())

    def rank(self, key: _Key) -> int:
        """How many keys sort before ``key`` (which is in the set)."""
        return len(self._neg) - 1 - bisect.bisect_left(self._neg, _negate(key))

    def keys(self) -> list[_Key]:
        return [_negate(k) for k in reversed(self._neg)]

    def __len__(self) -> int:
        return len(self._neg)

    def __bool__(self) -> bool:
        return bool(self._neg)


def _negate(key: _Key) -> _Key:
    return (-key[0], -key[1], -key[2], -key[3])


#: The name of the arrival-order queue this replaced: with one owner the order is the same.
FifoScheduler = FairScheduler
