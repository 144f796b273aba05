"""A sweep's options, checked once: :class:`SweepOptions` (frozen) and :class:`Progress`.

:func:`fluxnb.sweep` takes the options as keyword-only arguments and builds one
:class:`SweepOptions` from them; everything after that reads the typed fields, never a dict.

>>> SweepOptions(concurrency=4, timeout=30).concurrency
4
>>> SweepOptions(concurrency=0)
Traceback (most recent call last):
    ...
ValueError: concurrency=0 must be an integer >= 1
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ..schema import PRICE_PER_MEGAPIXEL
from .cache import ResultCache, default_cache_dir

if TYPE_CHECKING:  # pragma: no cover
    from tqdm.auto import tqdm

__all__ = ["DEFAULT_MAX_JOBS", "CacheSpec", "Progress", "ProgressCallback", "ProgressSpec",
           "SeedSpec", "SweepOptions"]

#: Sweeps that would send more jobs than this stop before sending anything (``max_jobs=``).
DEFAULT_MAX_JOBS = 100

#: ``progress=`` may be a callable ``(done, total, row)``; ``row`` is the job's first row (a dict).
ProgressCallback: TypeAlias = Callable[[int, int, "Mapping[str, Any] | None"], Any]
#: ``"auto"`` (tqdm.auto), None (silent) or a :data:`ProgressCallback`.
ProgressSpec: TypeAlias = "Literal['auto'] | ProgressCallback | None"
#: An int (every cell), ``"fixed"`` (the base seed, or one drawn once), ``"per_cell"``, one seed
#: per cell, or None (``"fixed"``).
SeedSpec: TypeAlias = "int | Literal['fixed', 'per_cell'] | Sequence[int] | None"
#: True (the default cache folder), False or None (no cache), a folder, or a ResultCache.
CacheSpec: TypeAlias = "bool | str | os.PathLike[str] | ResultCache | None"


def _check_positive_int(name: str, value: Any, *, minimum: int, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        more = ", or None" if optional else ""
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}{more}")


def _check_seconds(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}={value!r} must be a number of seconds > 0, or None")


@dataclass(frozen=True)
class SweepOptions:
    """Every option of :func:`fluxnb.sweep` (see there), validated when it is made."""

    seeds: SeedSpec = None
    sample: int | None = None
    random_state: int | None = None
    concurrency: int = 8
    max_jobs: int | None = DEFAULT_MAX_JOBS
    cache: CacheSpec = True
    progress: ProgressSpec = "auto"
    timeout: float | None = None
    price_per_megapixel: float = PRICE_PER_MEGAPIXEL
    seconds_per_job: float | None = None
    verbose: bool = True
    dry_run: bool = False
    #: record each cell that ran in the run journal: True, False, or None (as the client's
    #: ``journal``: ``fluxnb.connect(journal=True)``); see :mod:`fluxnb.sweeps.journal`
    journal: bool | None = None

    def __post_init__(self) -> None:
        _check_positive_int("concurrency", self.concurrency, minimum=1, optional=False)
        _check_positive_int("max_jobs", self.max_jobs, minimum=0, optional=True)
        _check_seconds("timeout", self.timeout)
        if self.journal not in (True, False, None):
            raise TypeError(f"journal={self.journal!r}: use True (record each cell in the run "
                            "journal), False, or None (as the client's journal= setting)")
        if self.progress != "auto" and self.progress is not None and not callable(self.progress):
            raise TypeError(f"progress={self.progress!r}: use 'auto', None or a callable "
                            "(done, total, row)")

    def result_cache(self) -> ResultCache | None:
        """The cache ``cache=`` names (None when caching is off)."""
        cache = self.cache
        if cache is False or cache is None:
            return None
        if cache is True:
            return ResultCache(default_cache_dir())
        if isinstance(cache, ResultCache):
            return cache
        return ResultCache(cache)


class Progress:
    """tqdm.auto, a callable ``(done, total, row)``, or nothing; counts the failed rows."""

    def __init__(self, spec: ProgressSpec, total: int, initial: int):
        self.total, self.done, self.failed = total, initial, 0
        self._bar: tqdm[Any] | None = None
        self._fn: ProgressCallback | None = None
        if spec == "auto":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc="sweep", unit="job", leave=True)
        elif callable(spec):
            self._fn = spec

    def start(self) -> None:
        if self._fn is not None:
            self._fn(self.done, self.total, None)

    def update(self, row: Mapping[str, Any] | None) -> None:
        self.done += 1
        if row is not None and row.get("status") != "ok":
            self.failed += 1
        if self._bar is not None:
            if self.failed:
                self._bar.set_postfix(failed=self.failed, refresh=False)
            self._bar.update(1)
        if self._fn is not None:
            self._fn(self.done, self.total, row)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
