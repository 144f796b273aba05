"""The panel's Run / Cancel controller (:class:`fluxnb.widgets.panel_job.PanelJob`) on its own:
real loopback servers, real clients, a recording listener, and no ipywidgets object anywhere."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

import fluxnb
from fluxnb.client import AsyncQueueClient, QueueClient
from fluxnb.protocol import Status
from fluxnb.result import InpaintResult
from fluxnb.server import BackgroundServer, ServerConfig
from fluxnb.widgets.panel_job import JobListener, PanelJob
from tests.conftest import make_test_image, make_test_mask
from tests.support import eventually

PARAMS: dict[str, Any] = {"prompt": "a small gold anchor pin", "num_inference_steps": 4, "seed": 7}


class Recorder(JobListener):
    """Every call the controller makes, in order, by name."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.statuses: list[Status] = []
        self.outputs: list[Image.Image] = []
        self.outcome: str | None = None
        self.error: BaseException | None = None

    def on_update(self, status: Status) -> None:
        self.statuses.append(status)
        if not self.events or self.events[-1] != "update":
            self.events.append("update")

    def on_enqueue(self, job: Any) -> None:
        self.events.append("enqueue")

    async def on_result(self, result: InpaintResult, outputs: list[Image.Image]) -> None:
        self.outputs = outputs
        self.events.append("result")

    def on_cancelled(self, outcome: str | None) -> None:
        self.outcome = outcome
        self.events.append("cancelled")

    def on_failed(self, exc: BaseException) -> None:
        self.error = exc
        self.events.append("failed")

    def on_finished(self) -> None:
        self.events.append("finished")


@pytest.fixture(scope="module")
def slow_server() -> Iterator[BackgroundServer]:
    """The null engine at 3 s per image: long enough to cancel mid-run."""
    server = BackgroundServer(ServerConfig(engine="null", engine_options={"delay": 3.0}, workers=1,
                                           port=0)).start()
    yield server
    server.stop()


def inputs() -> tuple[Image.Image, Image.Image]:
    return make_test_image(), make_test_mask()


def test_a_script_runs_the_job_on_the_controller_s_own_loop(live_server: BackgroundServer) -> None:
    image, mask = inputs()
    recorder = Recorder()
    jobs = PanelJob(AsyncQueueClient(live_server.base_url, poll_interval=0.05))
    try:
        result = jobs.run(PARAMS, image, mask, recorder, timeout=60)
        assert isinstance(result, InpaintResult) and result is jobs.result
        assert recorder.events[0] == "enqueue" and recorder.events[-2:] == ["result", "finished"]
        assert jobs.job is not None and jobs.job.request_id == result.request_id
        assert result.input_image is image and result.seed == 7
        assert len(recorder.outputs) == 1 and recorder.outputs[0].size == image.size
        assert not jobs.running and jobs.cancel() is False          # nothing left to cancel
    finally:
        jobs.close()


def test_in_a_running_loop_the_job_is_a_task_there(live_server: BackgroundServer) -> None:
    image, mask = inputs()

    async def main() -> tuple[Any, InpaintResult | None, Recorder]:
        recorder = Recorder()
        async with AsyncQueueClient(live_server.base_url, poll_interval=0.05) as client:
            jobs = PanelJob(client)
            with pytest.raises(RuntimeError, match="arun"):
                jobs.run(PARAMS, image, mask, recorder)               # would block the loop
            task = jobs.start(PARAMS, image, mask, recorder)
            with pytest.raises(RuntimeError, match="already running"):
                jobs.start(PARAMS, image, mask, Recorder())
            return task, await PanelJob.wait(task), recorder

    task, result, recorder = asyncio.run(main())
    assert isinstance(task, asyncio.Task) and result is not None and result.seed == 7
    assert recorder.events[-2:] == ["result", "finished"]


def test_a_sync_client_waits_in_a_worker_thread(live_server: BackgroundServer) -> None:
    image, mask = inputs()
    recorder = Recorder()
    with QueueClient(live_server.base_url, poll_interval=0.05) as client:
        result = asyncio.run(PanelJob(client).arun(PARAMS, image, mask, recorder))
    assert result is not None and recorder.events[0] == "enqueue" and "result" in recorder.events


def test_cancel_cancels_the_job_on_the_server(slow_server: BackgroundServer) -> None:
    image, mask = inputs()
    recorder = Recorder()
    jobs = PanelJob(AsyncQueueClient(slow_server.base_url, poll_interval=0.05))
    try:
        task = jobs.start(PARAMS, image, mask, recorder)
        eventually(lambda: jobs.job is not None, 10, "the job was never submitted")
        assert jobs.running and jobs.cancel() is True
        assert PanelJob.wait_blocking(task, timeout=10) is None
        assert recorder.events[-2:] == ["cancelled", "finished"]
        assert recorder.outcome == jobs.cancel_outcome == "CANCELLATION_REQUESTED"
        job = slow_server.service.get(jobs.job.request_id)
        eventually(lambda: job.state == "COMPLETED", 10, lambda: f"the job is {job.state}")
        assert job.error_type == "request_cancelled" and jobs.result is None
    finally:
        jobs.close()


def test_a_failure_is_reported_and_raised(live_server: BackgroundServer) -> None:
    image, mask = inputs()
    recorder = Recorder()
    jobs = PanelJob(AsyncQueueClient(live_server.base_url))
    try:
        with pytest.raises(fluxnb.ValidationError, match="strength"):
            jobs.run({**PARAMS, "strength": 5.0}, image, mask, recorder)
        assert recorder.events == ["failed", "finished"] and isinstance(recorder.error,
                                                                         fluxnb.ValidationError)
        assert jobs.job is None                                      # nothing was sent
    finally:
        jobs.close()


def test_a_client_it_made_is_made_on_first_run_and_closed_by_close(
        live_server: BackgroundServer) -> None:
    made: list[AsyncQueueClient] = []

    def connect() -> AsyncQueueClient:
        made.append(AsyncQueueClient(live_server.base_url, poll_interval=0.05))
        return made[-1]

    jobs = PanelJob(connect=connect)
    assert jobs.client is None                                       # nothing connected yet
    image, mask = inputs()
    assert jobs.run(PARAMS, image, mask, JobListener(), timeout=60) is not None
    assert jobs.client is made[0] and len(made) == 1
    jobs.close()
    assert jobs.client is None
    with pytest.raises(RuntimeError, match="closed"):                 # the client it made is closed
        asyncio.run(made[0].submit({**PARAMS, "image_url": image, "mask_url": mask}))


def test_the_controller_needs_no_widgets() -> None:
    code = ("import sys, fluxnb.widgets.panel_job as m; m.PanelJob(); "
            "assert 'ipywidgets' not in sys.modules, 'ipywidgets was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

