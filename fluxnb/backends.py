"""``fluxnb.connect()``: one call that picks the backend, so the same notebook runs anywhere.

Order: an explicit ``base_url`` (or ``FLUXNB_BASE_URL``) → fal.ai when ``FAL_KEY`` is set → an
embedded local server on a free loopback port with the CPU ``preview`` engine. Which backend is in
use is said once, on stderr.

>>> client = connect()                                # no FAL_KEY: embedded preview server
>>> client = connect("https://gpu-box.lab:8000", key="class-key")   # a shared GPU server
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any

from .protocol import DEFAULT_BASE_URL

__all__ = ["connect", "embedded_server"]

_lock = threading.Lock()
_servers: dict[tuple[Any, ...], Any] = {}
_announced: set[str] = set()


def embedded_server(engine: str = "preview", *, workers: int = 2, **engine_options: Any) -> Any:
    """The process-wide local server for this engine, started on first use (stopped at exit).

    Returns a :class:`fluxnb.server.BackgroundServer`; ``.base_url`` is where it listens.
    """
    from .server import BackgroundServer, ServerConfig

    key = (engine, workers, tuple(sorted(engine_options.items())))
    with _lock:
        server = _servers.get(key)
        if server is None:
            config = ServerConfig(host="127.0.0.1", port=0, engine=engine, workers=workers,
                                  engine_options=dict(engine_options))
            server = BackgroundServer(config).start()
            _servers[key] = server
            atexit.register(server.stop)
    return server


def _announce(text: str, *, quiet: bool) -> None:
    if quiet or text in _announced:
        return
    _announced.add(text)
    print(f"fluxnb: {text}", file=sys.stderr, flush=True)


def connect(
    base_url: str | None = None,
    *,
    key: str | None = None,
    asynchronous: bool = False,
    engine: str = "preview",
    workers: int = 2,
    quiet: bool = False,
    **client_options: Any,
) -> Any:
    """A client for the right backend: ``QueueClient``, or ``AsyncQueueClient`` with ``asynchronous``.

    ``base_url`` targets any fal-compatible server (fal.ai, ``fluxnb serve`` on a GPU box); its
    key is ``key`` or ``FLUXNB_KEY`` (``FAL_KEY`` is only ever sent to fal.ai). Without a base URL
    and without ``FAL_KEY``, a local server with ``engine`` is started in a background thread.
    Extra keyword arguments go to the client (``timeout``, ``max_retries``, ...).
    """
    from .client import AsyncQueueClient, QueueClient

    cls = AsyncQueueClient if asynchronous else QueueClient
    base_url = base_url or os.environ.get("FLUXNB_BASE_URL") or None
    if base_url is not None:
        client = cls(base_url.rstrip("/"), key=key, **client_options)
        _announce(f"using the server at {base_url}", quiet=quiet)
        return client
    if key or os.environ.get("FAL_KEY") or os.environ.get("FAL_KEY_ID"):
        client = cls(DEFAULT_BASE_URL, key=key, **client_options)
        _announce(f"using fal.ai ({DEFAULT_BASE_URL}); jobs are billed to your fal account",
                  quiet=quiet)
        return client
    server = embedded_server(engine, workers=workers)
    client = cls(server.base_url, **client_options)
    what = ("a preview engine (classical hole filling + seeded noise), not a generative model"
            if engine == "preview" else f"the {engine!r} engine")
    _announce(f"no FAL_KEY set: using an embedded local server at {server.base_url} with {what}. "
              "Set FAL_KEY for fal.ai, or pass base_url= for a shared server.", quiet=quiet)
    return client
