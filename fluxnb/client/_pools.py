"""Which connection pool serves the running event loop, for :class:`AsyncQueueClient`.

Connections belong to the event loop that opened them, so the async client keeps one
``httpx.AsyncClient`` per loop (made on first use in that loop, closed when the loop ends), or
one shared pool when the caller passed a ``transport=`` (or outside asyncio). A caller's
loop-bound transport used from a second loop is an :class:`~fluxnb.errors.EventLoopError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import httpx

from .._aio import PerLoop
from ..errors import EventLoopError

__all__ = ["LoopPools", "loop_errors"]


async def _close_pool(pool: httpx.AsyncClient) -> None:
    await pool.aclose()


class LoopPools:
    """One pool per event loop (``shared``: one for all), and a closed one after :meth:`aclose`."""

    def __init__(self, new_pool: Callable[[], httpx.AsyncClient], *, shared: bool):
        self._new_pool = new_pool
        self._per_loop: PerLoop[httpx.AsyncClient] = PerLoop(new_pool, _close_pool)
        #: With a caller's transport (or outside asyncio): one pool for every loop.
        self._shared: httpx.AsyncClient | None = new_pool() if shared else None
        self._closed: httpx.AsyncClient | None = None

    def current(self) -> httpx.AsyncClient:
        """The pool of the running event loop."""
        if self._closed is not None:
            return self._closed
        if self._shared is None:
            import asyncio

            try:
                asyncio.get_running_loop()
            except RuntimeError:  # not on an asyncio loop (trio, through anyio): one pool
                self._shared = self._new_pool()
            else:
                return self._per_loop.get()
        return self._shared

    async def aclose(self) -> None:
        """Close every pool; from now on :meth:`current` is a closed pool (requests fail)."""
        closed = self._new_pool()
        await closed.aclose()
        self._closed = closed
        await self._per_loop.aclose()
        if self._shared is not None:
            await self._shared.aclose()


def _loop_error(exc: RuntimeError) -> EventLoopError | None:
    """The fluxnb error for asyncio's "bound to a different event loop" (and "Event loop is
    closed") raised from inside a caller's transport; None for any other RuntimeError."""
    text = str(exc)
    if "different event loop" not in text and "Event loop is closed" not in text:
        return None
    return EventLoopError(
        f"this AsyncQueueClient's transport= belongs to another event loop ({text}). The client "
        "keeps one connection pool per event loop by itself, but a transport you pass is shared "
        "by every loop: use such a client from one event loop only, or make one client (with its "
        "own transport) per loop; without transport=, one client works from any loop")


@contextlib.contextmanager
def loop_errors() -> Iterator[None]:
    """A caller's transport used from the wrong event loop: EventLoopError (see ``_loop_error``)."""
    try:
        yield
    except RuntimeError as exc:
        if (loop_error := _loop_error(exc)) is None:
            raise
        raise loop_error from exc
