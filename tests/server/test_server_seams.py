"""The job service's seams, without HTTP: the scheduler's order, a result store put in from
outside, eviction, the owner carried by every job, and the fake engine context."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fluxnb.protocol import COMPLETED
from fluxnb.server.config import ServerConfig
from fluxnb.server.engines import EngineCancelled, EngineOutput, EngineRequest, create_engine
from fluxnb.server.engines.testing import RecordingContext
from fluxnb.server.scheduler import FifoScheduler
from fluxnb.server.service import JobRecord, JobService
from fluxnb.server.store import InMemoryResultStore, ResultStore, StoredResult

from ..conftest import make_test_image, make_test_mask

PARAMS = {"prompt": "p", "image_url": "data:,", "mask_url": "data:,", "num_images": 1,
          "output_format": "png", "num_inference_steps": 4}


class CountingStore(InMemoryResultStore):
    """The in-memory store, noting which jobs it saved and kept."""

    def __init__(self, max_results: int) -> None:
        super().__init__(max_results)
        self.saved: list[str] = []
        self.kept: list[str] = []

    def save(self, job_id: str, output: EngineOutput, request: EngineRequest,
             elapsed: float) -> StoredResult:
        self.saved.append(job_id)
        return super().save(job_id, output, request, elapsed)

    def keep(self, job_id: str, files_token: str | None) -> list[str]:
        self.kept.append(job_id)
        return super().keep(job_id, files_token)


@pytest.fixture
def store() -> CountingStore:
    return CountingStore(max_results=1)


@pytest.fixture
def service(store: CountingStore) -> Iterator[JobService]:
    svc = JobService(ServerConfig(engine="null"), store=store)
    svc.start()
    yield svc
    svc.stop()


def submit(service: JobService, **kwargs: Any) -> JobRecord:
    return service.submit("fal-ai/flux-lora", PARAMS, image=make_test_image(32, 32),
                          mask=make_test_mask(32, 32), **kwargs)


async def completed(service: JobService, job: JobRecord, timeout: float = 10.0) -> None:
    with service.watch(job, logs=False) as changed:
        while job.state != COMPLETED:
            await asyncio.wait_for(changed.wait(), timeout)
            changed.clear()


def test_the_scheduler_runs_normal_before_low_then_in_arrival_order() -> None:
    queue: FifoScheduler[JobRecord] = FifoScheduler()
    jobs = [JobRecord(id=str(i), app="a", params={}, priority=p, seq=i)
            for i, p in enumerate([1, 0, 1, 0])]
    for job in jobs:
        queue.add(job)
    assert [queue.position(j) for j in jobs] == [2, 0, 3, 1]
    queue.remove(jobs[3])
    queue.remove(jobs[3])    # a second remove is a no-op
    assert [j.id for j in queue] == ["1", "0", "2"]
    assert queue.next() is jobs[1] and len(queue) == 2


def test_a_store_put_in_from_outside_keeps_results_and_evicts_the_oldest(
        service: JobService, store: CountingStore) -> None:
    first = submit(service, owner="ada")
    asyncio.run(completed(service, first))
    token = first.files_token
    assert token is not None and first.owner == "ada" and first.ok
    name = first.result["images"][0]["file_name"] if first.result else ""
    path, mime = service.file(token, name) or (Path(), "")
    assert path.is_file() and mime == "image/png"
    second = submit(service)
    asyncio.run(completed(service, second))
    assert second.owner is None
    assert store.saved == store.kept == [first.id, second.id]
    # max_results=1: the first job and its file are gone, the second is kept
    assert service.get(first.id) is None and service.get(second.id) is second
    assert service.file(token, name) is None and not path.exists()
    assert service.stats["stored"] == 1 and service.stats["jobs"]["completed"] == 2


def test_the_in_memory_store_is_a_result_store() -> None:
    store: ResultStore = InMemoryResultStore()
    store.open()
    try:
        assert len(store) == 0 and store.file("nope", "x.png") is None
    finally:
        store.close()


def test_the_recording_context_logs_like_the_server_and_plays_a_cancel() -> None:
    engine = create_engine("null")
    request = EngineRequest(image=Image.new("RGB", (8, 8)), mask=Image.new("L", (8, 8), 255),
                            params=dict(PARAMS, num_images=2), seed=1)
    ctx = RecordingContext()
    engine.run(request, ctx)
    assert ctx.steps == 20 and ctx.lines[-1] == "image 2/2: step 10/10"
    ctx = RecordingContext()
    ctx.cancel()
    with pytest.raises(EngineCancelled):
        engine.run(request, ctx)
    assert ctx.lines == ["image 1/2: step 1/10"] and ctx.cancelled
