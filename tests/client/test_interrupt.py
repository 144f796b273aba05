"""Ctrl-C (KeyboardInterrupt) and task cancellation during ``run``/``wait`` cancel the job on the
server and name its request id; real loopback servers, a real SIGINT for the sync client."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from fluxnb import AsyncQueueClient, QueueClient
from fluxnb.protocol import InProgress

from ..conftest import make_test_image, make_test_mask
from ..support import eventually


def _inputs() -> dict[str, Any]:
    return {"prompt": "p", "image_url": make_test_image(32, 32), "mask_url": make_test_mask(32, 32)}


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    eventually(condition, timeout, what)


@pytest.fixture
def slow_server(server_factory):
    """A null engine at 20 s per image (a step every 2 s): a job runs until it is cancelled."""
    return server_factory(engine="null", engine_options={"delay": 20.0}, workers=1)


def _assert_cancelled_on_server(server, request_id: str) -> None:
    _wait_until(lambda: server.service.stats["jobs"]["cancelled"] == 1, "cancelled on the server")
    stats = server.service.stats
    assert stats["jobs"]["completed"] == 0 and stats["requests"].get("cancel", 0) >= 1
    job = server.service.get(request_id)
    assert job.error_type == "request_cancelled"


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt here even when this process inherited SIGINT ignored (as
    a shell's background job does)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("method", ["run", "wait"])
def test_ctrl_c_in_sync_run_or_wait_cancels_the_job_and_names_it(slow_server, sigint_raises,
                                                                 method: str) -> None:
    running = threading.Event()

    def on_update(status: object) -> None:
        if isinstance(status, InProgress):
            running.set()

    def interrupt_when_running() -> None:
        if running.wait(30):
            os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, as Ctrl-C sends

    killer = threading.Thread(target=interrupt_when_running, daemon=True)
    killer.start()
    with QueueClient(slow_server.base_url) as client:
        with pytest.raises(KeyboardInterrupt) as info:
            if method == "run":
                client.run(_inputs(), on_update=on_update)
            else:
                client.wait(client.submit(_inputs()), on_update=on_update)
    killer.join(5)
    exc = info.value
    request_id = exc.request_id  # type: ignore[attr-defined]
    assert exc.cancel_outcome == "CANCELLATION_REQUESTED"  # type: ignore[attr-defined]
    assert f"cancelled request {request_id} on the server" in "\n".join(exc.__notes__)
    _assert_cancelled_on_server(slow_server, request_id)


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["task.cancel", "cancel scope"])
async def test_cancelling_the_async_task_cancels_the_job_on_the_server(slow_server, how: str) -> None:
    running = asyncio.Event()
    caught: list[BaseException] = []

    def on_update(status: object) -> None:
        if isinstance(status, InProgress):
            running.set()

    async with AsyncQueueClient(slow_server.base_url) as client:
        async def job() -> None:
            try:
                await client.run(_inputs(), on_update=on_update)
            except BaseException as exc:
                caught.append(exc)
                raise

        if how == "task.cancel":
            task = asyncio.create_task(job())
            await asyncio.wait_for(running.wait(), 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:  # anyio's level cancellation: every await in the scope is cancelled, unless shielded
            async with anyio.create_task_group() as group:
                group.start_soon(job)
                await asyncio.wait_for(running.wait(), 30)
                group.cancel_scope.cancel()
    exc = caught[0]
    assert isinstance(exc, asyncio.CancelledError)
    request_id = exc.request_id  # type: ignore[attr-defined]
    assert exc.cancel_outcome == "CANCELLATION_REQUESTED"  # type: ignore[attr-defined]
    assert f"cancelled request {request_id} on the server" in "\n".join(exc.__notes__)
    await anyio.to_thread.run_sync(_assert_cancelled_on_server, slow_server, request_id)


def test_an_unreachable_server_does_not_mask_the_interrupt(slow_server) -> None:
    """The cancel is best effort: when it fails, the KeyboardInterrupt still goes on, and says the
    job may still run."""
    with QueueClient(slow_server.base_url) as client:
        job = client.submit(_inputs())
        seen = []

        def on_update(status: object) -> None:
            if isinstance(status, InProgress) and not seen:
                seen.append(status)
                client._http.close()  # the cancel that follows cannot be sent
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt) as info:
            client.wait(job, on_update=on_update)
    assert info.value.cancel_outcome is None  # type: ignore[attr-defined]
    assert f"could not cancel request {job.request_id}" in "\n".join(info.value.__notes__)
    slow_server.service.cancel(job.request_id)
