"""Helpers that let one test body drive the sync and the async client alike."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fluxnb.client import AsyncQueueClient

__all__ = ["call", "close", "collect"]


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; await the outcome when it is awaitable (async client methods)."""
    out = fn(*args, **kwargs)
    return await out if inspect.isawaitable(out) else out


async def collect(iterator: Any) -> list[Any]:
    """Every item of a sync or async iterator."""
    if hasattr(iterator, "__aiter__"):
        return [item async for item in iterator]
    return list(iterator)


async def close(client: Any) -> None:
    """Close either client."""
    await call(client.aclose if isinstance(client, AsyncQueueClient) else client.close)
