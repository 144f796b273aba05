"""The ``X-Fluxnb-Engine`` response header: a pure ASGI middleware, so streaming responses
(the SSE status stream) pass through untouched.

>>> from fastapi import FastAPI
>>> app = FastAPI()
>>> app.add_middleware(EngineHeader, engine="preview")
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["EngineHeader"]

_ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]],
                     Callable[[MutableMapping[str, Any]], Awaitable[None]]], Awaitable[None]]


class EngineHeader:
    """Pure ASGI middleware adding ``X-Fluxnb-Engine`` to every response (streaming-safe)."""

    def __init__(self, app: _ASGIApp, engine: str):
        self.app = app
        self.header = (b"x-fluxnb-engine", engine.encode("latin-1", "replace"))

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, wrapped)
