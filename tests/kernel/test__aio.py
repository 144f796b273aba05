"""``fluxnb._aio``, the package's one sync-over-async bridge: results, errors, the running-loop
case, and Ctrl-C, which must cancel the coroutine's task and let its cleanup run before the
KeyboardInterrupt goes on (a sweep's cleanup cancels its jobs on the server)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import doctest
import os
import signal
import threading
from typing import Any

import pytest

from fluxnb import _aio
from fluxnb._aio import BackgroundLoop, PerLoop, run_blocking, wait_future


async def _thread_of_loop() -> tuple[int, asyncio.AbstractEventLoop]:
    await asyncio.sleep(0)
    return threading.get_ident(), asyncio.get_running_loop()


async def _fails() -> None:
    await asyncio.sleep(0)
    raise ValueError("strength=2 is out of range")


def _in_a_running_loop(fn: Any) -> Any:
    """Call ``fn()`` from inside a coroutine on a plain loop in this thread, as a Jupyter cell
    runs: SIGINT keeps Python's default handler (KeyboardInterrupt), no asyncio.Runner."""
    async def cell() -> Any:
        return fn()

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(cell())
    finally:
        loop.close()


def _until_cancelled(cleanup: list[str], interrupt: Any = None) -> Any:
    """A coroutine that (optionally) sends Ctrl-C, then waits until it is cancelled; its cleanup
    awaits (like a cancel request to the server) and is recorded."""
    async def job() -> None:
        try:
            if interrupt is not None:
                interrupt()
            await asyncio.Event().wait()          # never set: only a cancel ends this
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            cleanup.append("cleaned up")
            raise

    return job()


def test_the_module_examples_run() -> None:
    result = doctest.testmod(_aio, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def test_without_a_running_loop_it_is_asyncio_run() -> None:
    ident, loop = run_blocking(_thread_of_loop())
    assert ident == threading.get_ident()                 # ran right here
    assert loop.is_closed()                               # on a fresh loop, closed after
    with pytest.raises(ValueError, match="strength=2"):
        run_blocking(_fails())


def test_with_a_running_loop_it_runs_on_a_worker_thread() -> None:
    ident, loop = _in_a_running_loop(lambda: run_blocking(_thread_of_loop()))
    assert ident != threading.get_ident() and loop.is_closed()
    with pytest.raises(ValueError, match="strength=2"):
        _in_a_running_loop(lambda: run_blocking(_fails()))


def test_a_non_coroutine_is_refused_with_what_to_do() -> None:
    with pytest.raises(TypeError, match=r"needs a coroutine.*run_blocking\(main\(\)\)"):
        run_blocking(_fails)  # type: ignore[arg-type]


@pytest.fixture
def default_sigint() -> None:
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT has a custom handler in this process")


@pytest.mark.usefixtures("default_sigint")
def test_ctrl_c_in_a_script_cancels_the_task_runs_its_cleanup_and_re_raises() -> None:
    cleanup: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_blocking(_until_cancelled(cleanup, lambda: signal.raise_signal(signal.SIGINT)))
    assert cleanup == ["cleaned up"]


@pytest.mark.usefixtures("default_sigint")
def test_ctrl_c_in_a_running_loop_cancels_the_worker_task_and_waits_for_its_cleanup() -> None:
    """The Jupyter case: Ctrl-C reaches the waiting (main) thread; the task on the worker loop
    is cancelled and its cleanup has run before KeyboardInterrupt comes out."""
    cleanup: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        _in_a_running_loop(lambda: run_blocking(
            _until_cancelled(cleanup, lambda: os.kill(os.getpid(), signal.SIGINT))))
    assert cleanup == ["cleaned up"]


def test_cancelling_a_background_future_waits_for_the_task_s_cleanup() -> None:
    """Unlike run_coroutine_threadsafe's future, cancel() asks: the future is done only once
    the task's cleanup has run."""
    cleanup: list[str] = []
    seen_when_done: list[list[str]] = []
    with BackgroundLoop() as background:
        started = threading.Event()

        async def job() -> None:
            started.set()
            await _until_cancelled(cleanup)

        future = background.submit(job())
        future.add_done_callback(lambda _f: seen_when_done.append(list(cleanup)))
        started.wait()
        assert future.cancel() is True
        with pytest.raises(concurrent.futures.CancelledError):
            wait_future(future)
        assert future.cancelled() and seen_when_done == [["cleaned up"]]
        assert background.run(_thread_of_loop())[0] != threading.get_ident()


def test_closing_a_background_loop_cancels_what_runs_and_waits_for_cleanup() -> None:
    cleanup: list[str] = []
    background = BackgroundLoop()
    started = threading.Event()

    async def job() -> None:
        started.set()
        await _until_cancelled(cleanup)

    future = background.submit(job())
    started.wait()
    background.close()
    assert cleanup == ["cleaned up"] and future.cancelled()
    with pytest.raises(RuntimeError, match="closed: make a new BackgroundLoop"):
        background.submit(_thread_of_loop())


def test_wait_future_times_out_and_the_task_goes_on() -> None:
    with BackgroundLoop() as background:
        gate = threading.Event()

        async def slow() -> str:
            await asyncio.get_running_loop().run_in_executor(None, gate.wait)
            return "finished"

        future = background.submit(slow())
        with pytest.raises(TimeoutError):
            wait_future(future, timeout=0.05)
        gate.set()
        assert wait_future(future) == "finished"


def test_per_loop_values_are_made_per_loop_and_closed_with_their_loop() -> None:
    closed: list[int] = []
    made: list[int] = []

    def factory() -> int:
        made.append(len(made))
        return made[-1]

    async def close(value: int) -> None:
        await asyncio.sleep(0)
        closed.append(value)

    values: PerLoop[int] = PerLoop(factory, close)

    async def twice() -> tuple[int, int]:
        return values.get(), values.get()

    assert run_blocking(twice()) == (0, 0)                 # one value per loop, reused in it
    assert closed == [0]                                   # closed as asyncio.run ended
    with BackgroundLoop() as first, BackgroundLoop() as second:
        assert first.run(twice()) == (1, 1) and second.run(twice()) == (2, 2)
        assert len(values) == 2
        first.run(values.aclose())                         # closes the other loop's value too
        assert sorted(closed) == [0, 1, 2]
        with pytest.raises(RuntimeError, match="closed"):
            second.run(twice())
