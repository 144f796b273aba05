"""One AsyncQueueClient used from several event loops (issue 9, item 1), against real loopback
servers: ``asyncio.run`` again and again, two threads each with a loop, two loops alive at once
(a kernel's loop and a panel's loop thread), and two panels sharing one client.

The rule: the client keeps one connection pool per event loop, so all of these just work; only a
``transport=`` of the caller's is shared by every loop, and a loop-bound one used from a second
loop raises :class:`fluxnb.errors.EventLoopError`, never asyncio's bare RuntimeError.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from fluxnb._aio import BackgroundLoop
from fluxnb.client import AsyncQueueClient
from fluxnb.errors import EventLoopError
from fluxnb.server import BackgroundServer

ROUNDS = 20


@pytest.fixture
def fast_server(server_factory: Callable[..., BackgroundServer]) -> BackgroundServer:
    return server_factory(engine="null", workers=2)


def _job(client: AsyncQueueClient, image: Image.Image, mask: Image.Image) -> Callable[[], Any]:
    async def run() -> str:
        result = await client.run(prompt="loops", image_url=image, mask_url=mask,
                                  num_inference_steps=2)
        assert len(await result.aimage_bytes()) == 1        # the download uses the pool too
        return result.request_id

    return run


def _in_threads(make: Callable[[], Any], n: int = 2) -> list[Any]:
    """``asyncio.run(make())`` in ``n`` threads at once; their results or errors."""
    outcomes: list[Any] = [None] * n

    def target(i: int) -> None:
        try:
            outcomes[i] = asyncio.run(make())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            outcomes[i] = exc

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_one_client_works_from_asyncio_run_and_from_threads(fast_server: BackgroundServer,
                                                            image: Image.Image,
                                                            mask: Image.Image) -> None:
    """Today's code failed 10-16 of these 20 rounds ("Event loop is closed", "<asyncio.locks.Event
    ...> is bound to a different event loop"): the pooled connection belonged to the loop that
    opened it."""
    client = AsyncQueueClient(fast_server.base_url)
    run = _job(client, image, mask)
    outcomes: list[Any] = []
    for _ in range(ROUNDS):
        try:
            outcomes.append(asyncio.run(run()))       # a fresh loop, closed afterwards
        except Exception as exc:  # noqa: BLE001 - reported below
            outcomes.append(exc)
        outcomes.extend(_in_threads(run))             # two more loops at once
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert not failures, f"{len(failures)} of {len(outcomes)} failed: {failures[:3]}"
    assert len(set(outcomes)) == 3 * ROUNDS


def test_one_client_works_from_two_live_loops_in_turn(fast_server: BackgroundServer,
                                                      image: Image.Image, mask: Image.Image) -> None:
    """A kernel's loop and a panel's loop thread, both alive, using one client by turns: each
    loop's idle connection stays its own. ``aclose`` in one loop closes the other's pool too."""
    client = AsyncQueueClient(fast_server.base_url)
    run = _job(client, image, mask)
    with BackgroundLoop(name="kernel") as kernel, BackgroundLoop(name="panel") as panel:
        ids = [(kernel if i % 2 else panel).run(run(), timeout=60) for i in range(ROUNDS)]
        assert len(set(ids)) == ROUNDS
        kernel.run(client.aclose(), timeout=30)
        with pytest.raises(RuntimeError, match="closed"):
            panel.run(run(), timeout=30)


def test_two_panels_sharing_one_client_run_from_several_loops(fast_server: BackgroundServer,
                                                              image: Image.Image,
                                                              mask: Image.Image) -> None:
    """The notebook's case: two panels, one client; Run from a loop (the kernel), ``arun`` under
    ``asyncio.run`` and ``panel.run()`` (the panel's own loop thread), in turn."""
    from fluxnb import InpaintPanel

    client = AsyncQueueClient(fast_server.base_url)
    panels = [InpaintPanel(client, image=image, mask=mask, prompt=f"panel {i}", seed=i)
              for i in range(2)]
    for panel in panels:
        panel.steps.value = 2
    try:
        with BackgroundLoop(name="kernel") as kernel:
            for i in range(ROUNDS):
                panel = panels[i % 2]
                if i % 3 == 0:
                    result = kernel.run(panel.arun(), timeout=60)
                elif i % 3 == 1:
                    result = asyncio.run(panel.arun())
                else:
                    result = panel.run(timeout=60)
                assert result is not None, panel.error.value
                assert panel.error.value == "" and panel.last_error is None
        assert [len(p.history) for p in panels] == [ROUNDS // 2, ROUNDS // 2]
        assert all(set(p.history["status"]) == {"completed"} for p in panels)
    finally:
        for panel in panels:
            panel.close()


def test_a_loop_bound_transport_of_your_own_gives_the_rule_not_asyncio_s_error(
        fast_server: BackgroundServer, image: Image.Image, mask: Image.Image) -> None:
    """With ``transport=httpx.AsyncHTTPTransport()`` the pool is the caller's, shared by every
    loop: its idle connection, opened in one live loop, used from another, raises
    EventLoopError naming the rule and what to do."""
    client = AsyncQueueClient(fast_server.base_url, transport=httpx.AsyncHTTPTransport())
    run = _job(client, image, mask)
    with BackgroundLoop(name="first") as first, BackgroundLoop(name="second") as second:
        first.run(run(), timeout=60)
        with pytest.raises(EventLoopError) as info:
            second.run(run(), timeout=60)
        assert isinstance(info.value, RuntimeError)
        text = str(info.value)
        assert "transport=" in text and "one client" in text and "per loop" in text
        first.run(client.aclose(), timeout=30)
