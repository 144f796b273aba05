"""The job service's queue: fair turns end to end, truthful positions, pause/resume, expiry
in O(N) bookkeeping while status requests get answered, and one replica per device."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fluxnb.protocol import COMPLETED, IN_QUEUE
from fluxnb.server import replicas as replicas_module
from fluxnb.server import service as service_module
from fluxnb.server.config import ServerConfig
from fluxnb.server.service import JobRecord, JobService

from ..conftest import make_test_image, make_test_mask
from ..support import eventually

PARAMS = {"prompt": "p", "image_url": "data:,", "mask_url": "data:,", "num_images": 1,
          "output_format": "png", "num_inference_steps": 4}
ROOMY = {"max_queue": 20_000, "max_queued_pixels": 10**12}  # the server caps are not tested here


def _config(**kwargs: Any) -> ServerConfig:
    return ServerConfig(**{"engine": "null", **ROOMY, **kwargs})


@pytest.fixture
def service() -> Iterator[JobService]:
    svc = JobService(_config())
    svc.start()
    yield svc
    svc.stop()


def submit(svc: JobService, owner: str | None, **kwargs: Any) -> JobRecord:
    return svc.submit("fal-ai/flux-lora", PARAMS, image=make_test_image(32, 32),
                      mask=make_test_mask(32, 32), owner=owner, **kwargs)


def _done(jobs: list[JobRecord]) -> bool:
    return all(j.state == COMPLETED for j in jobs)


def test_a_quiet_student_behind_a_flood_of_100_is_dispatched_within_two_jobs(
        service: JobService) -> None:
    service.pause()
    flood = [submit(service, "flooder") for _ in range(100)]
    quiet = submit(service, "quiet")
    assert service.snapshot(quiet, False)["queue_position"] <= 1
    service.resume()
    eventually(lambda: _done([*flood, quiet]), 30, "the burst did not finish")
    order = sorted([*flood, quiet], key=lambda j: j.started_at or 0.0)
    assert order.index(quiet) <= 2


def test_reported_positions_are_the_dispatch_order() -> None:
    svc = JobService(_config())  # not started: the test drains the queue itself
    owners = ["a", "a", "b", None, "a", "c", "b", "a", "a", "c"] * 6
    jobs = [submit(svc, o, priority="low" if i % 7 == 0 else "normal")
            for i, o in enumerate(owners)]
    for job in jobs[::9]:
        svc.cancel(job.id)
    queued = [j for j in jobs if j.state == IN_QUEUE]
    reported = {j.id: svc.snapshot(j, False)["queue_position"] for j in queued}
    assert reported == {j.id: svc.position(j) for j in queued}
    order = []
    with svc._lock:
        while (job := svc._queue.next()) is not None:
            order.append(job)
    assert len(order) == len(queued)
    assert [reported[j.id] for j in order] == list(range(len(order)))


def test_pausing_a_student_holds_their_jobs_and_resuming_runs_them(service: JobService) -> None:
    service.pause("bob")
    bob = [submit(service, "bob") for _ in range(2)]
    ada = [submit(service, "ada") for _ in range(2)]
    assert service.paused() == {"queue": False, "owners": ["bob"]}
    eventually(lambda: _done(ada), 10, "ada's jobs did not run")
    assert [j.state for j in bob] == [IN_QUEUE, IN_QUEUE]
    assert [service.position(j) for j in bob] == [0, 1]  # nothing runnable goes before them
    service.resume("bob")
    eventually(lambda: _done(bob), 10, "bob's jobs did not run after resume")
    assert service.paused() == {"queue": False, "owners": []}


def test_a_paused_queue_holds_everything_and_resume_wakes_the_workers(
        service: JobService) -> None:
    service.pause()
    jobs = [submit(service, None) for _ in range(3)]
    assert service.paused()["queue"] is True
    assert [service.position(j) for j in jobs] == [0, 1, 2]
    assert all(j.state == IN_QUEUE for j in jobs)
    service.resume()
    eventually(lambda: _done(jobs), 10, "the workers did not wake on resume")
    assert all(j.ok for j in jobs)


class _Clock:
    """service.time with a monotonic clock the test moves forward (nothing else changes)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _expire_together(svc: JobService, clock: _Clock, n: int) -> list[JobRecord]:
    svc.pause()  # nothing dispatches: every job stays queued until its deadline
    jobs = [svc.submit("fal-ai/flux-lora", PARAMS, start_timeout=60.0, owner=f"s{i % 30}")
            for i in range(n)]
    assert svc.stats["queued"] >= n
    clock.offset = 120.0  # every deadline is past now: the timeout thread sees them together
    with svc._lock:
        svc._reap.notify_all()
    return jobs


def test_8000_jobs_expiring_together_cost_o_n_bookkeeping(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(service_module, "time", clock)
    svc = JobService(_config())
    svc.start()
    try:
        n = 8000
        jobs = _expire_together(svc, clock, n)
        eventually(lambda: svc.stats["jobs"]["timed_out"] == n, 60, lambda: str(svc.stats))
        assert {j.error_type for j in jobs} == {"request_timeout"}
        assert svc.stats["queued"] == 0
        # each job is touched a few times for its own changes, not once per other expiry
        assert sum(j.version for j in jobs) < 5 * n
    finally:
        svc.stop()


def test_a_status_request_is_answered_while_8000_jobs_expire(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(service_module, "time", clock)
    svc = JobService(_config())
    svc.start()
    try:
        n = 8000
        svc.pause()
        other = svc.submit("fal-ai/flux-lora", PARAMS, owner="other")
        seen: list[int] = []
        stop = threading.Event()

        def ask() -> None:  # a status request, again and again, noting how far expiry got
            while not stop.is_set() and len(seen) < 100_000:
                assert svc.snapshot(other, False)["status"] == IN_QUEUE
                seen.append(svc.stats["jobs"]["timed_out"])

        _expire_together(svc, clock, n)
        reader = threading.Thread(target=ask, daemon=True)
        reader.start()
        eventually(lambda: svc.stats["jobs"]["timed_out"] == n, 60, lambda: str(svc.stats))
        stop.set()
        reader.join(10)
        answered_meanwhile = [k for k in seen if 0 < k < n]
        assert answered_meanwhile, "no status answer came while the jobs expired"
    finally:
        svc.stop()


def test_two_replicas_share_a_burst() -> None:
    svc = JobService(_config(engine_options={"delay": 0.2}, devices=("cpu", "cpu")))
    assert svc.engine is svc._replicas[0].engine and len(svc.replicas()) == 2
    svc.start()
    try:
        jobs = [submit(svc, f"s{i % 3}") for i in range(6)]
        eventually(lambda: _done(jobs), 30, "the burst did not finish")
        assert all(j.ok for j in jobs)
        infos = svc.replicas()
        assert [r["device"] for r in infos] == ["cpu", "cpu"]
        assert all(r["done"] >= 1 for r in infos) and sum(r["done"] for r in infos) == 6
        assert {t.name for t in svc._threads} >= {"fluxnb-worker-0-0", "fluxnb-worker-1-0"}
    finally:
        svc.stop()


def test_devices_all_without_cuda_names_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replicas_module, "_cuda_count", lambda: 0)
    with pytest.raises(ValueError, match="--devices all: no CUDA device"):
        JobService(_config(devices=("all",)))
    monkeypatch.setattr(replicas_module, "_cuda_count", lambda: 2)
    assert replicas_module.resolve_devices(("all",)) == ("cuda:0", "cuda:1")
    with pytest.raises(ValueError, match="'all' stands alone"):
        replicas_module.resolve_devices(("all", "cpu"))


def test_only_watched_queued_jobs_are_woken_when_positions_change() -> None:
    svc = JobService(_config())  # not started: nothing runs, positions change by cancels
    first, watched, unwatched = (submit(svc, None) for _ in range(3))

    async def watch_a_cancel() -> int:
        with svc.watch(watched, logs=False) as changed:
            before = watched.version
            svc.cancel(first.id)
            await asyncio.wait_for(changed.wait(), 5)
            return watched.version - before

    versions = unwatched.version
    assert asyncio.run(watch_a_cancel()) >= 1
    assert svc.position(watched) == 0 and svc.position(unwatched) == 1
    assert unwatched.version == versions  # read fresh by its next status request instead
    svc.cancel(watched.id)
    assert svc.position(unwatched) == 0 and not svc._watched
