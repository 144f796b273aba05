"""Quotas and budgets of the class server (issue 11, item 4): who may queue one more job.

Per person: at most ``queued_limit`` jobs waiting (``--max-queued``, default 4 with a roster),
a budget of megapixels x images per server session (``--budget-mp``, charged at submit from the
requested size and refunded when the job never reached the engine) and, behind the fal gateway, a
budget in US dollars (``--budget-usd``, counted from each finished job's ``cost_usd``; a submit
whose estimate at :data:`fluxnb.schema.PRICE_PER_MEGAPIXEL` would pass it is refused). A roster
column of the same name overrides the server's limit for one person. **Teachers are exempt from
the per-person limits**, not from the server's caps: ``max_queue`` jobs and
``max_queued_pixels`` pixels waiting or running on the whole server.

A refusal is a :class:`QuotaExceeded` (HTTP 429, fal's ``{"detail": "..."}`` text naming the limit,
the usage and when it frees, and a ``Retry-After`` estimate where waiting helps). Usage lives in
a :class:`Ledger` whose :meth:`~Ledger.snapshot` / :meth:`~Ledger.restore` keep it across restarts.

>>> from fluxnb.server.auth import Person
>>> from fluxnb.server.config import ServerConfig
>>> quota = Quota(ServerConfig(roster="r.csv", budget_mp=2.0))
>>> ada = Person("ada", "student")
>>> quota.admit("j1", "ada", (1500, 1000, 1), person=ada, waiting=0)
>>> quota.admit("j2", "ada", (1000, 1000, 1), person=ada, waiting=1)
Traceback (most recent call last):
...
fluxnb.server.quota.QuotaExceeded: 429 budget_mp: ada has used 1.5 of 2 megapixels ...
>>> quota.finish("j1", ran=False)       # cancelled while queued: refunded
>>> quota.ledger.used("ada")
(0.0, 0.0)
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..protocol import BUDGET_EXHAUSTED, IN_PROGRESS, IN_QUEUE
from ..schema import PRICE_PER_MEGAPIXEL, estimate_cost, resolve_image_size
from .auth import Person
from .config import ServerConfig
from .record import JobRecord

__all__ = ["Ledger", "Quota", "QuotaExceeded", "output_megapixels", "requested_size"]

#: The size assumed for a job whose size is not known at submit (an http(s) input): 1 MP.
_UNKNOWN_SIZE = (1000, 1000)
_FIRST_JOB_SECONDS = 1.0  # the wait estimate before any job has finished
_EWMA = 0.2


class QuotaExceeded(Exception):
    """A submit over a limit: HTTP ``status`` (429), fal's ``detail`` text, ``retry_after``
    seconds (None where waiting does not help) and ``limit``, the name of the limit."""

    def __init__(self, limit: str, detail: str, retry_after: float | None = None,
                 status: int = 429):
        self.limit = limit
        self.detail = detail
        self.retry_after = retry_after
        self.status = status
        super().__init__(f"{status} {detail}")

    @property
    def headers(self) -> dict[str, str]:
        """``Retry-After`` (whole seconds) when waiting helps; for a spent budget
        ``X-Fal-Error-Type: budget_exhausted`` (clients do not retry it); else nothing."""
        if self.limit in ("budget_mp", "budget_usd"):
            return {"X-Fal-Error-Type": BUDGET_EXHAUSTED}
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class Ledger:
    """What each person has used this server session: megapixels and US dollars. Thread-safe;
    never reset by the eviction of old jobs.

    >>> ledger = Ledger()
    >>> ledger.charge("ada", megapixels=2.0)
    >>> ledger.charge("ada", usd=0.07)
    >>> ledger.snapshot()
    {'ada': {'megapixels': 2.0, 'usd': 0.07}}
    >>> Ledger.from_snapshot(ledger.snapshot()).used("ada")
    (2.0, 0.07)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: dict[str, list[float]] = {}

    def charge(self, owner: str, *, megapixels: float = 0.0, usd: float = 0.0) -> None:
        """Add to ``owner``'s usage."""
        with self._lock:
            row = self._used.setdefault(owner, [0.0, 0.0])
            row[0] += megapixels
            row[1] += usd

    def refund(self, owner: str, *, megapixels: float = 0.0, usd: float = 0.0) -> None:
        """Take back a charge (never below zero)."""
        with self._lock:
            row = self._used.setdefault(owner, [0.0, 0.0])
            row[0] = max(0.0, row[0] - megapixels)
            row[1] = max(0.0, row[1] - usd)

    def used(self, owner: str) -> tuple[float, float]:
        """``(megapixels, usd)`` ``owner`` has used."""
        with self._lock:
            mp, usd = self._used.get(owner, (0.0, 0.0))
            return mp, usd

    def snapshot(self) -> dict[str, dict[str, float]]:
        """``{owner: {"megapixels": float, "usd": float}}``, for saving."""
        with self._lock:
            return {o: {"megapixels": mp, "usd": usd} for o, (mp, usd) in self._used.items()}

    def restore(self, snapshot: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the usage by a saved :meth:`snapshot` (bad numbers count as 0)."""
        used = {str(o): [_number(row.get("megapixels")), _number(row.get("usd"))]
                for o, row in snapshot.items() if isinstance(row, Mapping)}
        with self._lock:
            self._used = used

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Mapping[str, Any]]) -> Ledger:
        ledger = cls()
        ledger.restore(snapshot)
        return ledger


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def requested_size(params: Mapping[str, Any], image: Image.Image | bytes | None
                   ) -> tuple[int, int, int]:
    """``(width, height, num_images)`` a submit asks for: ``image_size``, else the decoded
    input's size, else an estimate of 1 MP.

    >>> requested_size({"image_size": "square_hd", "num_images": 2}, None)
    (1024, 1024, 2)
    """
    count = params.get("num_images") or 1
    count = count if isinstance(count, int) and count > 0 else 1
    if params.get("image_size") is not None:
        w, h = resolve_image_size(params["image_size"], (1, 1))
    elif isinstance(image, Image.Image):
        w, h = image.size
    else:
        w, h = _header_size(image) or _UNKNOWN_SIZE
    return w, h, count


def output_megapixels(result: Mapping[str, Any] | None) -> float:
    """Megapixels of a result's ``images`` (width x height each, summed).

    >>> output_megapixels({"images": [{"width": 1000, "height": 500}] * 2})
    1.0
    """
    total = 0
    for image in (result or {}).get("images") or []:
        if isinstance(image, Mapping):
            w, h = image.get("width"), image.get("height")
            if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
                total += w * h
    return total / 1e6


def _header_size(data: bytes | None) -> tuple[int, int] | None:
    """The size an encoded picture's header declares (nothing decoded), or None."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as picture:
            return picture.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


@dataclass
class _Held:
    """A job admitted and not yet finished: what it was charged and holds."""

    owner: str
    megapixels: float
    usd_estimate: float
    is_waiting: Callable[[], bool]


class Quota:
    """The limits of one server and the usage against them. The job service calls
    :meth:`admit` before it queues a job (under its lock), :meth:`finish` when the job ends and
    :meth:`ran_for` with a job's run time; :meth:`limits` and :meth:`row` feed ``usage()``."""

    def __init__(self, config: ServerConfig, ledger: Ledger | None = None):
        self.config = config
        self.ledger = ledger if ledger is not None else Ledger()
        self._held: dict[str, _Held] = {}
        self._by_owner: dict[str, dict[str, _Held]] = {}
        self._pixels = 0.0  # megapixels of every held job
        self._job_seconds = _FIRST_JOB_SECONDS
        self.slots = max(1, config.workers)
        #: who is on the roster now (the app sets it; reloads show at once)
        self.people: Callable[[], Iterable[Person]] = tuple

    # -- the limits -------------------------------------------------------------------------

    def limits(self, person: Person | None) -> dict[str, Any]:
        """``{"max_queued", "budget_mp", "budget_usd"}`` of ``person`` (roster column, else the
        server's; None when unlimited; all None for a teacher)."""
        if person is None or person.is_teacher:
            return {"max_queued": None, "budget_mp": None, "budget_usd": None}
        return {"max_queued": _pick(person.max_queued, self.config.queued_limit),
                "budget_mp": _pick(person.budget_mp, self.config.budget_mp),
                "budget_usd": _pick(person.budget_usd, self.config.budget_usd)}

    def admit(self, job_id: str, owner: str | None, size: tuple[int, int, int], *,
              person: Person | None = None, waiting: int,
              is_waiting: Callable[[], bool] = lambda: True) -> None:
        """Charge ``owner`` for a new job asking for ``size`` (:func:`requested_size`) within
        ``person``'s limits (None: no per-person limits), ``waiting`` jobs being queued on the
        server now, or raise :class:`QuotaExceeded`. ``is_waiting`` tells whether the job is
        still queued."""
        who = str(owner) if owner is not None else "this server's user"
        owner = str(owner)
        width, height, count = size
        megapixels = width * height / 1e6 * count
        who = owner if person is not None and person.name is not None else "this server's user"
        self._check_server(megapixels, waiting)
        limits = self.limits(person)
        mine = self._by_owner.get(owner, {})
        if limits["max_queued"] is not None:
            queued = sum(1 for held in mine.values() if held.is_waiting())
            if queued >= limits["max_queued"]:
                raise QuotaExceeded(
                    "max_queued", f"max_queued: {who} already has {queued} of "
                    f"{limits['max_queued']} jobs waiting; one of your {queued} waiting jobs must "
                    f"start first; about {self._wait(len(self._by_owner)):.0f} s. Wait for one, "
                    "or cancel one you no longer need.", self._wait(len(self._by_owner)))
        used_mp, used_usd = self.ledger.used(owner)
        budget = limits["budget_mp"]
        if budget is not None and used_mp + megapixels > budget + 1e-9:
            left = max(0.0, budget - used_mp)
            raise QuotaExceeded(
                "budget_mp", f"budget_mp: {who} has used {used_mp:.3g} of {budget:g} megapixels "
                f"(megapixels x num_images) for this server session and this job asks for "
                f"{megapixels:.3g} ({left:.3g} left). The budget lasts for this server session; "
                "ask for fewer or smaller images, or ask your teacher to raise budget_mp in the "
                "roster.")
        budget = limits["budget_usd"]
        if budget is not None:
            pending = sum(held.usd_estimate for held in mine.values())
            estimate = estimate_cost(width, height, count)
            if used_usd >= budget or used_usd + pending + estimate > budget + 1e-9:
                raise QuotaExceeded(
                    "budget_usd", f"budget_usd: {who} has spent ${used_usd:.2f} of "
                    f"${budget:.2f} for this server session (${pending:.2f} more is waiting or "
                    f"running) and this job would cost about ${estimate:.2f} at "
                    f"${PRICE_PER_MEGAPIXEL}/MP. The budget lasts for this server session; ask "
                    "for fewer or smaller images, or ask your teacher to raise budget_usd in the "
                    "roster.")
        self.adopt(job_id, owner, size, is_waiting)
        self.ledger.charge(owner, megapixels=megapixels)

    def adopt(self, job_id: str, owner: str | None, size: tuple[int, int, int],
              is_waiting: Callable[[], bool] = lambda: True) -> None:
        """Hold a job without checks or charge (one queued before a restart: its charge is in
        the restored ledger), so that it counts against the limits and :meth:`finish` refunds it."""
        width, height, count = size
        held = _Held(str(owner), width * height / 1e6 * count, estimate_cost(width, height, count),
                     is_waiting)
        self._held[job_id] = held
        self._by_owner.setdefault(held.owner, {})[job_id] = held
        self._pixels += held.megapixels

    def _check_server(self, megapixels: float, waiting: int) -> None:
        cap = self.config.max_queue
        if waiting >= cap:
            raise QuotaExceeded(
                "max_queue", f"max_queue: this server already has {waiting} of {cap} jobs "
                f"waiting; one must start first; about {self._wait(1):.0f} s. Try again then.",
                self._wait(1))
        cap_mp = self.config.max_queued_pixels / 1e6
        if self._pixels + megapixels > cap_mp + 1e-9 and self._held:
            raise QuotaExceeded(
                "max_queued_pixels", f"max_queued_pixels: the jobs waiting or running on this "
                f"server hold {self._pixels:.1f} of {cap_mp:g} megapixels and this job asks for "
                f"{megapixels:.1f}; one must finish first; about {self._wait(1):.0f} s. Try "
                "again then, or ask for smaller images.", self._wait(1))

    def _wait(self, jobs: int) -> float:
        """Seconds until about ``jobs`` jobs have started on the server's slots."""
        return max(1.0, self._job_seconds * math.ceil(max(1, jobs) / self.slots))

    # -- the end of a job -------------------------------------------------------------------

    def finish(self, job_id: str, *, ran: bool, cost_usd: float | None = None,
               megapixels: float | None = None) -> None:
        """A job ended: ``ran`` False (cancelled or timed out while queued, failed before the
        engine ran) refunds its megapixels; ``cost_usd`` is added to its owner's spending.
        ``megapixels`` (:func:`output_megapixels` of the result) charges what a job that ran
        made beyond its estimate (an ``image_url`` input's size is unknown at submit).
        Unknown ids (already finished, or restored after a restart) are only charged the cost."""
        held = self._held.pop(job_id, None)
        if held is None:
            return
        if ran and megapixels is not None and math.isfinite(megapixels) \
                and megapixels > held.megapixels:
            self.ledger.charge(held.owner, megapixels=megapixels - held.megapixels)
        mine = self._by_owner.get(held.owner, {})
        mine.pop(job_id, None)
        if not mine:
            self._by_owner.pop(held.owner, None)
        self._pixels = max(0.0, self._pixels - held.megapixels)
        if not ran:
            self.ledger.refund(held.owner, megapixels=held.megapixels)
        if cost_usd:
            self.ledger.charge(held.owner, usd=float(cost_usd))

    def ran_for(self, seconds: float) -> None:
        """A job ran ``seconds``: the wait estimates follow the recent run times."""
        if math.isfinite(seconds) and seconds >= 0:
            self._job_seconds += _EWMA * (min(seconds, 3600.0) - self._job_seconds)

    # -- the dashboard's view --------------------------------------------------------------

    def usage(self, jobs: Iterable[JobRecord]) -> dict[str, dict[str, Any]]:
        """Per owner (every person of :attr:`people` too, with no jobs): the counts of ``jobs``
        queued, running, completed and failed, the session's ``megapixels`` and ``usd`` and the
        person's limits (``max_queued``, ``budget_mp``, ``budget_usd``; None when unlimited)."""
        roster = {str(p.name): p for p in self.people()}
        rows: dict[str, dict[str, Any]] = {}

        def row(owner: str) -> dict[str, Any]:
            if owner not in rows:
                mp, usd = self.ledger.used(owner)
                rows[owner] = {"queued": 0, "running": 0, "completed": 0, "failed": 0,
                               "megapixels": round(mp, 6), "usd": round(usd, 6),
                               **self.limits(roster.get(owner))}
            return rows[owner]

        for name in roster:
            row(name)
        for job in jobs:
            counts = row(str(job.owner))
            key = {IN_QUEUE: "queued", IN_PROGRESS: "running"}.get(job.state)
            counts[key or ("completed" if job.error is None else "failed")] += 1
        for owner in self.ledger.snapshot():
            row(owner)
        return rows


def _pick(own: float | int | None, server: float | int | None) -> Any:
    return own if own is not None else server



