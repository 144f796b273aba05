"""The public entry points :func:`sweep` (blocking) and :func:`asweep` (a coroutine).

``asweep`` runs in the caller's event loop (``await fluxnb.asweep(...)`` in a notebook, or
``create_task`` from a panel). ``sweep`` is the blocking twin, through :func:`fluxnb._aio.run_blocking`:
``asyncio.run`` when no loop is running in this thread (scripts), else a worker thread with its
own loop (a Jupyter kernel always has one running). No nest_asyncio.

Both take the axes apart from the options: positionally as a mapping (``axes=``, any name) and
as keyword arguments (``**axis_kwargs``); the options are keyword-only and become one frozen
:class:`~fluxnb.sweeps.options.SweepOptions`. The work is in :mod:`.prepare` (no network) and
:mod:`.execute` (:class:`~fluxnb.sweeps.execute.SweepRun`).

Cancelling the task (or a KeyboardInterrupt in ``sweep``) cancels the jobs in flight on the
server; every finished row is already in the run folder.

>>> s = fluxnb.sweep(client, base, "runs/a", {"steps": [4, 8]}, timeout=60)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._aio import run_blocking
from ..schema import PRICE_PER_MEGAPIXEL
from .execute import SweepRun
from .journal import SweepJournal
from .options import (
    DEFAULT_MAX_JOBS,
    CacheSpec,
    Progress,
    ProgressCallback,
    ProgressSpec,
    SeedSpec,
    SweepOptions,
)
from .prepare import Prepared, prepare, run_folder
from .result import Sweep

if TYPE_CHECKING:  # pragma: no cover
    from ..client import AsyncQueueClient, QueueClient

__all__ = ["DEFAULT_MAX_JOBS", "ProgressCallback", "asweep", "sweep"]

_Folder = str | os.PathLike[str] | None


def _merge_axes(axes: Mapping[str, Any] | None, axis_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``axes`` then ``axis_kwargs``, in order (the first axis is the outermost loop).

    >>> _merge_axes({"timeout": [1, 2]}, {"steps": [4]})
    {'timeout': [1, 2], 'steps': [4]}
    """
    if axes is not None and not isinstance(axes, Mapping):
        raise TypeError(f"axes must be a mapping of axis name -> values, not {type(axes).__name__}")
    merged = dict(axes or {})
    twice = sorted(set(merged) & set(axis_kwargs))
    if twice:
        raise ValueError(f"axes given twice (in axes= and as keywords): {twice}")
    merged.update(axis_kwargs)
    return merged


def _client_or_connect(client: QueueClient | AsyncQueueClient | None) -> tuple[Any, bool]:
    """The client to use and whether the sweep made it (then it closes it)."""
    if client is not None:
        return client, False
    from ..connect import connect

    return connect(), True


def _start(prep: Prepared, options: SweepOptions) -> Progress | None:
    """Print the pre-flight line; unless a dry run, refuse too big a sweep and start the progress."""
    if options.verbose:
        print(f"{prep.preflight}; folder {prep.log.folder}", file=sys.stdout, flush=True)
    if options.dry_run:
        return None
    prep.plan.check_size(prep.preflight, options.max_jobs)
    total = len(prep.plan.cells)
    progress = Progress(options.progress if prep.pending else None, total, total - len(prep.pending))
    progress.start()
    return progress


async def _run(prep: Prepared, client: Any, options: SweepOptions, progress: Progress | None, *,
               own: bool) -> None:
    """The pending cells on ``client``, or with ``own`` on an async clone of it (closed
    afterwards): the clone has the same URL, key, app, transport and retry settings."""
    aclient = client.clone(asynchronous=True) if own else client
    # the caller's client names the backend in the journal (the clone forgets ``embedded``)
    recorder = SweepJournal(client, prep.log.inputs) if SweepJournal.wanted(
        options.journal, client) else None
    try:
        await SweepRun(prep, aclient, concurrency=options.concurrency, timeout=options.timeout,
                       progress=progress, journal=recorder).run()
    finally:
        if own:
            await aclient.aclose()


def _close(prep: Prepared, progress: Progress | None) -> None:
    if progress is not None:
        progress.close()
    prep.log.close()


def _prepare(client: Any, base_inputs: Mapping[str, Any] | None, folder: Path,
             axes: Mapping[str, Any], options: SweepOptions) -> Prepared:
    return prepare(client, base_inputs or {}, folder, axes, options,
                   priced=bool(getattr(client, "is_fal", True)))


async def asweep(
    client: QueueClient | AsyncQueueClient | None = None,
    base_inputs: Mapping[str, Any] | None = None,
    folder: _Folder = None,
    axes: Mapping[str, Any] | None = None,
    /,
    *,
    seeds: SeedSpec = None,
    sample: int | None = None,
    random_state: int | None = None,
    concurrency: int = 8,
    max_jobs: int | None = DEFAULT_MAX_JOBS,
    cache: CacheSpec = True,
    progress: ProgressSpec = "auto",
    timeout: float | None = None,
    price_per_megapixel: float = PRICE_PER_MEGAPIXEL,
    seconds_per_job: float | None = None,
    verbose: bool = True,
    dry_run: bool = False,
    journal: bool | None = None,
    **axis_kwargs: Any,
) -> Sweep:
    """The async twin of :func:`sweep` (same arguments); run it in the caller's event loop.

    >>> s = await fluxnb.asweep(client, {"prompt": "p", "image_url": img, "mask_url": m},
    ...                         "runs/a", steps=[10, 20], strength="0.5-1 [3]")   # doctest: +SKIP

    Cancelling the task cancels the jobs in flight on the server and re-raises CancelledError;
    the finished rows are in the folder (``Sweep.load(folder)``).
    """
    options = SweepOptions(seeds=seeds, sample=sample, random_state=random_state, concurrency=concurrency,
                           max_jobs=max_jobs, cache=cache, progress=progress, timeout=timeout,
                           price_per_megapixel=price_per_megapixel, seconds_per_job=seconds_per_job,
                           verbose=verbose, dry_run=dry_run, journal=journal)
    all_axes = _merge_axes(axes, axis_kwargs)
    from ..client import AsyncQueueClient

    active, created = _client_or_connect(client)  # a new client's settings make the async one here
    try:
        folder_path = run_folder(folder)
        prep = _prepare(active, base_inputs, folder_path, all_axes, options)
        bar: Progress | None = None
        try:
            bar = _start(prep, options)
            if prep.pending and not options.dry_run:
                await _run(prep, active, options, bar, own=not isinstance(active, AsyncQueueClient))
        finally:
            _close(prep, bar)
    finally:
        if created:
            active.close()
    return Sweep.load(folder_path)


def sweep(
    client: QueueClient | AsyncQueueClient | None = None,
    base_inputs: Mapping[str, Any] | None = None,
    folder: _Folder = None,
    axes: Mapping[str, Any] | None = None,
    /,
    *,
    seeds: SeedSpec = None,
    sample: int | None = None,
    random_state: int | None = None,
    concurrency: int = 8,
    max_jobs: int | None = DEFAULT_MAX_JOBS,
    cache: CacheSpec = True,
    progress: ProgressSpec = "auto",
    timeout: float | None = None,
    price_per_megapixel: float = PRICE_PER_MEGAPIXEL,
    seconds_per_job: float | None = None,
    verbose: bool = True,
    dry_run: bool = False,
    journal: bool | None = None,
    **axis_kwargs: Any,
) -> Sweep:
    """Run ``base_inputs`` over every combination of the axes; returns a :class:`Sweep`.

    >>> s = fluxnb.sweep(client, {"prompt": "a gold pin", "image_url": image, "mask_url": mask},
    ...                  "runs/steps-strength", steps=[4, 8, 16], strength="0.5-1 [3]")  # doctest: +SKIP
    >>> s.frame                    # one row per output image            # doctest: +SKIP

    Args:
        client: a QueueClient or AsyncQueueClient (None: ``fluxnb.connect()``).
        base_inputs: the job's inputs; the axes vary them.
        folder: the run folder (a new temp folder when None): the log is written there after
            every job, and running the same sweep with the same folder resumes it.
        axes: a mapping axis name -> values, for names that are also option names; the
            keyword arguments (``**axis_kwargs``) are the usual way. An axis is any schema field or
            alias (``steps``, ``guidance``, ``strength``, ``seed``, ``prompt``, ``mask``, ``image``,
            ``lora_scale``...) as a list, a numpy array, a range or an A1111 string
            (``"1-10 [5]"``, ``"1-5 (+2)"``). The first axis is the outermost loop.
            ``prompt_sr=["lion", "tiger"]`` replaces the first value in the prompt by each
            value; ``lora_scale`` 0 runs without the LoRAs ("no LoRA"); ``loras=[None,
            "a.safetensors", ...]`` compares LoRA files (see :mod:`fluxnb.sweeps.axes`).
        seeds: the seed policy: an int (every cell), ``"fixed"`` (default: the base seed or one
            drawn once), ``"per_cell"`` or a list with one seed per cell.
        sample: run ``sample`` cells drawn with ``random_state`` instead of the whole grid.
        random_state: the draw of the sample and of the seeds (default: derived from the sweep).
        concurrency: jobs on the server at once (8).
        max_jobs: refuse sweeps that would send more jobs (100); None for no limit.
        cache: True (``$FLUXNB_CACHE_DIR`` or ``~/.cache/fluxnb/sweeps``), False, or a folder.
        progress: ``"auto"`` (tqdm.auto), None, or a callable ``(done, total, row)``.
        timeout: seconds per job; a job past it is cancelled on the server and its row says so.
        price_per_megapixel: for the estimate (0.035); the cost is shown only for fal.ai.
        seconds_per_job: for the time estimate (default: from steps and megapixels).
        verbose: print the pre-flight line.
        dry_run: plan and print, send nothing.
        journal: record each cell that ran in the local run journal (:func:`fluxnb.journal`,
            origin ``sweep``; ``.rerun(i)`` runs a cell again): True, False, or None (default:
            as the client, so ``fluxnb.connect(journal=True)`` records). Cells answered by the
            cache are not recorded; the run folder keeps every row either way.

    A KeyboardInterrupt cancels the jobs in flight on the server and returns the finished rows
    (``sweep.interrupted`` is True).
    """
    options = SweepOptions(seeds=seeds, sample=sample, random_state=random_state, concurrency=concurrency,
                           max_jobs=max_jobs, cache=cache, progress=progress, timeout=timeout,
                           price_per_megapixel=price_per_megapixel, seconds_per_job=seconds_per_job,
                           verbose=verbose, dry_run=dry_run, journal=journal)
    all_axes = _merge_axes(axes, axis_kwargs)
    active, created = _client_or_connect(client)
    try:
        folder_path = run_folder(folder)
        interrupted = _run_blocking(active, base_inputs, folder_path, all_axes, options)
    finally:
        if created:
            active.close()
    result = Sweep.load(folder_path, interrupted=interrupted)
    if interrupted and options.verbose:
        _say_interrupted(result, folder_path)
    return result


def _run_blocking(client: Any, base_inputs: Mapping[str, Any] | None, folder: Path,
                  axes: Mapping[str, Any], options: SweepOptions) -> bool:
    """:func:`sweep`'s work; True when a KeyboardInterrupt stopped it. It runs on an async clone
    of its own, whatever ``client`` is: the clone's pools belong to the bridge's loop."""
    prep = _prepare(client, base_inputs, folder, axes, options)
    bar: Progress | None = None
    try:
        bar = _start(prep, options)
        if prep.pending and not options.dry_run:
            try:
                run_blocking(_run(prep, client, options, bar, own=True))
            except KeyboardInterrupt:  # the task was cancelled: in-flight jobs were cancelled
                return True
    finally:
        _close(prep, bar)
    return False


def _say_interrupted(result: Sweep, folder: Path) -> None:
    ok = int((result.frame["status"] == "ok").sum()) if len(result.frame) else 0
    print(f"sweep interrupted: kept {ok} finished rows in {folder}; run the same sweep with "
          f"folder={str(folder)!r} to resume", flush=True)
