"""``fluxnb.connect()``: one call that picks the backend, so the same notebook runs anywhere
(the composition root: the one module that knows both the client and the server).

Order: an explicit ``base_url`` (or ``FLUXNB_BASE_URL``) → fal.ai with a fal key (``key=``,
``FAL_KEY``, or ``FAL_KEY_ID`` + ``FAL_KEY_SECRET``) → an embedded local server on a free loopback
port with the CPU ``preview`` engine. Which backend is in use is said once: on stderr in a script,
as a calm HTML note in a notebook (an IPython kernel shows stderr as a pink box that reads as an
error).

>>> client = connect()                                # no FAL_KEY: embedded preview server
>>> client = connect("https://gpu-box.lab:8000", key="class-key")   # a shared GPU server
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Literal, overload

from .client import AsyncQueueClient, QueueClient
from .client.auth import clean_key, fal_env_key
from .errors import CredentialsError
from .protocol import DEFAULT_BASE_URL

if TYPE_CHECKING:  # pragma: no cover - the server is imported when an embedded one starts
    from .server import BackgroundServer

__all__ = ["connect", "embedded_server"]

_lock = threading.Lock()
_servers: dict[tuple[object, ...], BackgroundServer] = {}
_announced: set[str] = set()


def embedded_server(engine: str = "preview", *, workers: int = 2,
                    **engine_options: Any) -> BackgroundServer:
    """The process-wide local server for this engine, started on first use (stopped at exit).

    Returns a :class:`fluxnb.server.BackgroundServer`; ``.base_url`` is where it listens.
    """
    from .server import BackgroundServer, ServerConfig

    key = (engine, workers, tuple(sorted(engine_options.items())))
    with _lock:
        server = _servers.get(key)
        if server is None:
            # only its owner can reach it: its downloads may reach loopback (not the network)
            config = ServerConfig(host="127.0.0.1", port=0, engine=engine, workers=workers,
                                  engine_options=dict(engine_options), fetch_allow_loopback=True)
            server = BackgroundServer(config).start()
            _servers[key] = server
            atexit.register(server.stop)
    return server


def _in_kernel() -> bool:
    """True inside a Jupyter/IPython kernel (not a terminal IPython, not a script)."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _note_html(text: str) -> str:
    """The notice as a small info box (blue rule, neutral background), text escaped."""
    import html

    return ("<div class='fluxnb-note' style='border-left:4px solid #1e88e5;background:#e3f2fd;"
            "color:#0d2a44;padding:6px 10px;margin:2px 0;border-radius:3px;font-size:90%'>"
            f"<b>fluxnb</b> &middot; {html.escape(text)}</div>")


def _announce(text: str, *, quiet: bool) -> None:
    if quiet or text in _announced:
        return
    _announced.add(text)
    if _in_kernel():
        import importlib

        shown: Any = importlib.import_module("IPython.display")  # untyped: keep mypy --strict calm
        shown.display(shown.HTML(_note_html(text)))
        return
    print(f"fluxnb: {text}", file=sys.stderr, flush=True)


def _key_for_fal(key: str | None) -> str | None:
    """The key ``connect()`` sends to fal.ai when it has no base URL, or None for the embedded
    server; a CredentialsError when the key is a fluxnb server's (rules 2-4 of ``connect()``)."""
    local = os.environ.get("FLUXNB_KEY")
    if key is not None and key != "":
        cleaned = clean_key(key, "key=")
        from_env = bool(local) and str(local).strip() == cleaned
        if from_env or ":" not in cleaned:
            why = ("it is FLUXNB_KEY's value, a key for a fluxnb server" if from_env else
                   "it is no fal.ai key (those look like '<key_id>:<key_secret>')")
            raise CredentialsError(
                f"connect(key=...) without a base URL would send the key to fal.ai, but {why}; "
                "nothing was sent. Give the server's URL too: base_url= "
                "(fluxnb.connect('https://server:8000', key=...)) or FLUXNB_BASE_URL.")
        return cleaned
    fal = fal_env_key()
    if fal is None and local:
        raise CredentialsError(
            "FLUXNB_KEY is set (a key for a fluxnb server) but no server URL is: pass base_url= "
            "to fluxnb.connect() or set FLUXNB_BASE_URL. To use the embedded local server instead, "
            "unset FLUXNB_KEY (FAL_KEY selects fal.ai).")
    return fal


@overload
def connect(base_url: str | None = None, *, key: str | None = None,
            asynchronous: Literal[False] = False, engine: str = "preview", workers: int = 2,
            quiet: bool = False, **client_options: Any) -> QueueClient: ...
@overload
def connect(base_url: str | None = None, *, key: str | None = None,
            asynchronous: Literal[True], engine: str = "preview", workers: int = 2,
            quiet: bool = False, **client_options: Any) -> AsyncQueueClient: ...
@overload
def connect(base_url: str | None = None, *, key: str | None = None, asynchronous: bool = False,
            engine: str = "preview", workers: int = 2, quiet: bool = False,
            **client_options: Any) -> QueueClient | AsyncQueueClient: ...


def connect(
    base_url: str | None = None,
    *,
    key: str | None = None,
    asynchronous: bool = False,
    engine: str = "preview",
    workers: int = 2,
    quiet: bool = False,
    **client_options: Any,
) -> QueueClient | AsyncQueueClient:
    """A client for the right backend: ``QueueClient``, or ``AsyncQueueClient`` with ``asynchronous``.

    The backend, in this order:

    1. ``base_url`` (or ``FLUXNB_BASE_URL``): any fal-compatible server (fal.ai, ``fluxnb serve``
       on a GPU box). Its key is ``key``, else ``FLUXNB_KEY``; fal's variables are read only when
       that server is fal's own.
    2. No base URL, ``key`` given: fal.ai with that key, unless the key was meant for a fluxnb
       server, which is a :class:`~fluxnb.errors.CredentialsError` and nothing is sent: it equals
       ``FLUXNB_KEY``, or it has no ``:`` (every fal key is ``<key_id>:<key_secret>``, so such a
       key can only be a fluxnb server's).
    3. No base URL, no ``key``: fal.ai with ``FAL_KEY``, else ``FAL_KEY_ID:FAL_KEY_SECRET``
       (half of that pair is an error naming both). ``FLUXNB_KEY`` is never sent there.
    4. Nothing of the above: a local server with ``engine`` in a background thread. With
       ``FLUXNB_KEY`` set this is an error instead: that key is for a server whose URL is missing.

    Keys are stripped of surrounding whitespace; one that is blank, non-ASCII or holds a control
    character is a ``CredentialsError`` naming its variable or ``key=``, never its value. Extra
    keyword arguments go to the client (``timeout``, ``max_retries``, ...); ``journal=`` is the
    run journal (:func:`fluxnb.journal`): None (default) records the panel's runs and
    ``fluxnb run`` but not plain ``client.run``, True records every ``client.run`` too, False
    records nothing.

    >>> connect(key="class-secret")          # no base URL: refused, this is no fal key
    Traceback (most recent call last):
    fluxnb.errors.CredentialsError: connect(key=...) without a base URL would send the key to fal.ai...
    """
    cls: type[QueueClient] | type[AsyncQueueClient] = AsyncQueueClient if asynchronous else QueueClient
    base_url = base_url or os.environ.get("FLUXNB_BASE_URL") or None
    if base_url is not None:
        client = cls(base_url.rstrip("/"), key=key, **client_options)
        _announce(f"using the server at {base_url}", quiet=quiet)
        return client
    fal_key = _key_for_fal(key)
    if fal_key is not None:
        client = cls(DEFAULT_BASE_URL, key=fal_key, **client_options)
        _announce(f"using fal.ai ({DEFAULT_BASE_URL}); jobs are billed to your fal account",
                  quiet=quiet)
        return client
    server = embedded_server(engine, workers=workers)
    client = cls(server.base_url, **client_options)
    client.journal_backend = "embedded"  # its port changes every kernel: named by what it is
    what = ("a preview engine (classical hole filling + seeded noise), not a generative model"
            if engine == "preview" else f"the {engine!r} engine")
    _announce(f"no FAL_KEY set: using an embedded local server at {server.base_url} with {what}. "
              "Set FAL_KEY for fal.ai, or pass base_url= for a shared server.", quiet=quiet)
    return client
