"""The laptop server's guard: only its own loopback ``Host``, only JSON bodies.

A server with no key and no roster bound to loopback (the embedded server of
``fluxnb.connect()``, ``fluxnb serve`` on 127.0.0.1 without ``--key``) trusts whoever reaches it,
and a web page in the owner's browser can reach it too: through DNS rebinding (a page of
``evil.example`` whose name then resolves to 127.0.0.1: its requests carry
``Host: evil.example:8000``) or a cross-site "simple" POST (a form or ``fetch`` with a
``text/plain`` body, which browsers send without asking). Like Jupyter Server, this guard
answers ``421`` to a ``Host`` that is not a loopback address or ``localhost`` on the server's
own port, and ``415`` to a POST/PUT/PATCH body that is not ``application/json`` (browsers cannot
send JSON cross-site without a CORS preflight this server never grants). fluxnb's client and the
official fal-client send JSON to ``127.0.0.1:port`` and pass. A keyed or roster server (reached
through proxies under other names) is not guarded: its key is the protection.

>>> from fluxnb.server import ServerConfig
>>> guarded(ServerConfig()), guarded(ServerConfig(key="k")), guarded(ServerConfig(host="0.0.0.0"))
(True, False, False)
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .config import ServerConfig

__all__ = ["LaptopGuard", "guarded"]

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[Any]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

_BODY_METHODS = ("POST", "PUT", "PATCH")


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def guarded(config: ServerConfig) -> bool:
    """Whether a server with ``config`` is a laptop server: no key, no roster, loopback only."""
    return config.key is None and config.roster is None and _is_loopback(config.host)


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a ``Host`` header value, or None when it is malformed."""
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else ""
    else:
        name, _, port_text = value.rpartition(":") if ":" in value else (value, "", "")
    if port_text and not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        return None
    return name, int(port_text) if port_text else None


def _host_ok(value: str, scope: _Scope) -> bool:
    parts = _split_host(value.strip())
    if parts is None or not _is_loopback(parts[0]):
        return False
    server = scope.get("server")
    own_port = server[1] if server and len(server) > 1 and isinstance(server[1], int) else None
    if own_port is None:  # no local address known (not uvicorn): any port of a loopback name
        return True
    default = 443 if scope.get("scheme") == "https" else 80
    return (parts[1] if parts[1] is not None else default) == own_port


def _media_type(value: str) -> str:
    return value.partition(";")[0].strip().lower()


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length", b"").strip()
    return b"transfer-encoding" in headers or (length not in (b"", b"0"))


async def _refuse(send: _Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class LaptopGuard:
    """Pure ASGI middleware: the Host and Content-Type checks above, when :func:`guarded`.

    >>> from fastapi import FastAPI
    >>> app = FastAPI()
    >>> app.add_middleware(LaptopGuard, config=ServerConfig())
    """

    def __init__(self, app: _ASGIApp, config: ServerConfig):
        self.app = app
        self.enabled = guarded(config)

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if not self.enabled or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not _host_ok(host, scope):
            shown = ascii(host[:100])
            await _refuse(send, 421, f"This fluxnb laptop server answers only requests for its own "
                                     f"loopback address (Host 127.0.0.1:<port>, localhost:<port> or "
                                     f"[::1]:<port>), not Host {shown}; to serve other names start "
                                     "it with --key or --roster.")
            return
        if scope.get("method") in _BODY_METHODS and _has_body(headers):
            kind = headers.get(b"content-type", b"").decode("latin-1")
            if _media_type(kind) != "application/json":
                shown = ascii(kind[:100]) if kind else "none"
                await _refuse(send, 415, f"This fluxnb laptop server takes request bodies only as "
                                         f"JSON (Content-Type: application/json), not Content-Type "
                                         f"{shown}; send the body as JSON.")
                return
        await self.app(scope, receive, send)
