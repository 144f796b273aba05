"""fluxnb's one sync-over-async bridge: :func:`run_blocking` and :class:`BackgroundLoop`.

Sync code that needs a coroutine's result calls :func:`run_blocking`. With no event loop running
in the thread (a script) that is :func:`asyncio.run`; with one running (a Jupyter cell, whose
kernel loop cannot be re-entered) the coroutine runs on a fresh loop in a worker thread while
the caller waits. Either way a KeyboardInterrupt (Ctrl-C) cancels the coroutine's task, waits for
its cleanup (cancelling jobs on the server, say), then re-raises. No nest_asyncio.

:class:`BackgroundLoop` is a long-lived loop in a daemon thread, for code that starts tasks
without a loop of its own (the panel in a script). Its :meth:`~BackgroundLoop.submit` returns a
:class:`concurrent.futures.Future` whose ``cancel()`` cancels the task the way
``asyncio.Task.cancel`` does: the future is done once the task's cleanup has run.

Objects holding asyncio primitives (a connection pool's sockets and events) belong to the loop
that made them. :class:`PerLoop` keeps one such value per event loop, made on first use in that
loop and closed when the loop ends; :class:`fluxnb.AsyncQueueClient` keeps its connection pools
in one, so one client works from any number of loops. Pure stdlib: nothing here knows HTTP.

>>> import asyncio
>>> async def answer() -> int:
...     await asyncio.sleep(0)
...     return 42
>>> run_blocking(answer())
42
>>> with BackgroundLoop() as background:
...     background.submit(answer()).result()
42
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

__all__ = ["BackgroundLoop", "PerLoop", "TaskFuture", "run_blocking", "wait_future"]

T = TypeVar("T")

#: How often a waiting thread wakes up (so Ctrl-C is seen on every platform); not a barrier.
_TICK = 0.25


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end from sync code and return its result (or raise its error).

    No loop running in this thread: like :func:`asyncio.run`. A loop running here (Jupyter):
    on a fresh loop in a worker thread, closed afterwards. A KeyboardInterrupt cancels the
    coroutine's task, waits for its cleanup, and re-raises KeyboardInterrupt.

    >>> async def double(x: int) -> int:
    ...     return 2 * x
    >>> run_blocking(double(21))
    42
    """
    if not asyncio.iscoroutine(coro):
        raise TypeError(f"run_blocking() needs a coroutine, not {type(coro).__name__}: "
                        "call the async function, e.g. run_blocking(main())")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        # asyncio.Runner: Ctrl-C in the main thread cancels the task, awaits its cleanup, then
        # raises KeyboardInterrupt; closing the runner cancels and awaits any other tasks.
        with asyncio.Runner() as runner:
            return runner.run(coro)
    with BackgroundLoop(name="fluxnb-run-blocking") as background:
        return background.run(coro)


class TaskFuture(concurrent.futures.Future[T]):
    """The :class:`concurrent.futures.Future` of a task on a :class:`BackgroundLoop`.

    Unlike :func:`asyncio.run_coroutine_threadsafe`'s future, ``cancel()`` only *asks* the task
    to stop (as ``asyncio.Task.cancel`` does): the future becomes done, cancelled or with the
    task's outcome, once the task has finished its cleanup.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self._loop = loop
        self._task: asyncio.Task[T] | None = None
        self._cancel_asked = False
        self._start_lock = threading.Lock()

    def cancel(self) -> bool:
        """Ask the task to stop; False when it is already done."""
        if self.done():
            return False
        with self._start_lock:
            self._cancel_asked = True
            task = self._task
        if task is not None:
            try:
                self._loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop is closed: the task can no longer run
                return concurrent.futures.Future.cancel(self)
        return True

    def _start(self, coro: Coroutine[Any, Any, T]) -> None:
        """In the loop's thread: create the task (unless cancelled first)."""
        with self._start_lock:
            if self._cancel_asked:
                coro.close()
                concurrent.futures.Future.cancel(self)
                return
            try:
                self._task = task = self._loop.create_task(coro)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                coro.close()
                self.set_exception(exc)
                return
        task.add_done_callback(self._settle)

    def _settle(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            concurrent.futures.Future.cancel(self)  # still PENDING: becomes CANCELLED
        elif task.exception() is not None:
            self.set_exception(task.exception())
        else:
            self.set_result(task.result())


class BackgroundLoop:
    """An asyncio loop running in a daemon thread; started on creation, stopped by :meth:`close`.

    >>> async def hello() -> str:
    ...     return "hi"
    >>> background = BackgroundLoop()
    >>> background.run(hello())        # blocks; Ctrl-C cancels the task and waits for its cleanup
    'hi'
    >>> background.close()
    """

    def __init__(self, *, name: str = "fluxnb-loop"):
        self.loop = asyncio.new_event_loop()
        self._closed = False
        self._futures: weakref.WeakSet[TaskFuture[Any]] = weakref.WeakSet()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"BackgroundLoop({self._thread.name!r}, {state})"

    def __enter__(self) -> BackgroundLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _main(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                _cancel_all_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())  # closes per-loop connections
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                for future in list(self._futures):  # never leave a waiter hanging
                    if not future.done():
                        future.set_exception(RuntimeError(f"{self!r} stopped before the task ended"))

    def submit(self, coro: Coroutine[Any, Any, T]) -> TaskFuture[T]:
        """Schedule ``coro`` as a task on this loop; returns its :class:`TaskFuture` at once."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self!r} is closed: make a new BackgroundLoop")
        future: TaskFuture[T] = TaskFuture(self.loop)
        self._futures.add(future)
        try:
            self.loop.call_soon_threadsafe(future._start, coro)
        except RuntimeError:  # the loop closed meanwhile
            coro.close()
            raise RuntimeError(f"{self!r} is closed: make a new BackgroundLoop") from None
        return future

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on this loop and block until it is done; returns its result.

        A KeyboardInterrupt cancels the task, waits for its cleanup (a second Ctrl-C stops
        waiting) and re-raises. After ``timeout`` seconds: TimeoutError, the task goes on. A
        task that ends cancelled raises asyncio.CancelledError, as under asyncio.run.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("BackgroundLoop.run() was called from its own loop: await instead")
        try:
            return wait_future(self.submit(coro), timeout)
        except concurrent.futures.CancelledError:
            raise asyncio.CancelledError() from None  # as asyncio.run says it


    def close(self, timeout: float | None = 10.0) -> None:
        """Cancel the tasks still running (and wait for their cleanup), then stop the loop."""
        if self._closed:
            return
        self._closed = True
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # already closed
            return
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


def wait_future(future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
    """Block until ``future`` is done and return its result (or raise its error).

    A KeyboardInterrupt cancels it, waits until its cleanup has run (a second Ctrl-C stops
    waiting), then re-raises. After ``timeout`` seconds: TimeoutError, the future goes on.

    >>> with BackgroundLoop() as background:
    ...     wait_future(background.submit(asyncio.sleep(0, "done")))
    'done'
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not future.done():
            left = _TICK if deadline is None else min(_TICK, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"not done after {timeout} s (it goes on in the background)")
            concurrent.futures.wait([future], timeout=left)
    except KeyboardInterrupt:
        future.cancel()
        while not future.done():
            concurrent.futures.wait([future], timeout=_TICK)
        raise
    return future.result()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel every task of ``loop`` and run them until their cleanup is done (as asyncio.run)."""
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler({"message": "unhandled exception while closing a "
                                         "BackgroundLoop", "exception": task.exception(),
                                         "task": task})


# -- one value per event loop ------------------------------------------------------------------


async def _until_loop_end(value: T, close: Callable[[T], Awaitable[Any]]) -> AsyncGenerator[None, None]:
    """Suspended at its ``yield`` for the loop's lifetime; the loop's ``shutdown_asyncgens()``
    (the end of ``asyncio.run``, ``BackgroundLoop.close``) closes it, and so ``value``."""
    try:
        yield
    finally:
        await close(value)


class PerLoop(Generic[T]):
    """One value per asyncio event loop: ``factory()`` makes it on first use in a loop, and
    ``close(value)`` is awaited in that loop when it ends (``asyncio.run`` returning,
    :meth:`BackgroundLoop.close`) or on :meth:`aclose`. Loops are held weakly.

    >>> made = []
    >>> async def dispose(value: list[int]) -> None:
    ...     value.append(-1)
    >>> pools = PerLoop(lambda: made.append([len(made)]) or made[-1], dispose)
    >>> async def use() -> list[int]:
    ...     return pools.get()
    >>> run_blocking(use()) is run_blocking(use())     # two loops, two values
    False
    >>> made                                           # each closed when its loop ended
    [[0, -1], [1, -1]]
    """

    def __init__(self, factory: Callable[[], T], close: Callable[[T], Awaitable[Any]]):
        self._factory = factory
        self._close = close
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                                tuple[T, AsyncGenerator[None, None]]]
        self._values = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.closed = False

    def __len__(self) -> int:
        """How many loops have a value now."""
        with self._lock:
            return sum(1 for loop in self._values if not loop.is_closed())

    def get(self) -> T:
        """The running loop's value (made now if this loop has none). Call it in a coroutine."""
        loop = asyncio.get_running_loop()  # RuntimeError outside a loop, as asyncio's own
        with self._lock:
            if self.closed:
                raise RuntimeError("closed: aclose() was called")
            entry = self._values.get(loop)
            if entry is not None:
                return entry[0]
            for old in [old for old in self._values if old.is_closed()]:
                del self._values[old]  # ended without shutting down its generators: drop
            value = self._factory()
            closer = _until_loop_end(value, self._close)
            _start_now(closer)  # registers it with this loop's async-generator hooks
            self._values[loop] = (value, closer)
            return value

    async def aclose(self) -> None:
        """Close every value: this loop's here, other running loops' in their own loop (waited
        for up to 5 s); values of loops that are not running are dropped (their loop's
        ``shutdown_asyncgens`` still closes them)."""
        with self._lock:
            self.closed = True
            entries = list(self._values.items())
            self._values.clear()
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # awaited outside asyncio (trio): only running loops can close theirs
            here = None
        elsewhere: list[concurrent.futures.Future[None]] = []
        for loop, (_value, closer) in entries:
            if loop is here:
                await closer.aclose()
            elif loop.is_running():
                try:
                    elsewhere.append(asyncio.run_coroutine_threadsafe(_aclose(closer), loop))
                except RuntimeError:  # it closed meanwhile
                    pass
        if elsewhere and here is not None:
            await asyncio.wait([asyncio.wrap_future(f) for f in elsewhere], timeout=5.0)


async def _aclose(agen: AsyncGenerator[None, None]) -> None:
    await agen.aclose()


def _start_now(agen: AsyncGenerator[None, None]) -> None:
    """Run ``agen`` to its first ``yield`` right here; it must not await anything before it."""
    step = agen.asend(None)
    try:
        step.send(None)
    except StopIteration:
        return
    raise RuntimeError("the generator awaited before its first yield")  # pragma: no cover
