"""Login sessions for fluxnb's own pages: the cookie ``fluxnb_session`` holds a random session id
(never the token); the server keeps id -> (token, CSRF token) in memory for 12 hours.

The cookie counts only for GETs under ``/_fluxnb/`` (pages, result files, stats; not
``/_fluxnb/run/``) and for the dashboard's action POSTs (``/_fluxnb/dashboard/...``, which also
check a CSRF token): never for the queue API.

>>> s = Sessions()
>>> sid, csrf = s.new("tok")
>>> s.get(sid).token, s.get("nope")
('tok', None)
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request

__all__ = ["COOKIE", "SESSION_TTL", "Sessions", "session_authorization"]

COOKIE = "fluxnb_session"
SESSION_TTL = 12 * 3600.0
_MAX_SESSIONS = 10_000


@dataclass
class _Session:
    token: str = field(repr=False)
    csrf: str = field(repr=False)
    expires: float


class Sessions:
    """Login sessions of one app: random id -> (token, CSRF token), kept in memory for 12 h (a
    restart logs everyone out; the oldest go beyond 10,000). Thread-safe.

    >>> Sessions().get(None) is None
    True
    """

    _create = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, _Session] = {}

    @classmethod
    def of(cls, app: FastAPI) -> Sessions:
        """The sessions of ``app`` (made on first use)."""
        with cls._create:
            found = getattr(app.state, "sessions", None)
            if not isinstance(found, Sessions):
                found = app.state.sessions = Sessions()
            return found

    def new(self, token: str) -> tuple[str, str]:
        """A fresh session for ``token``: ``(session id, CSRF token)``."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        with self._lock:
            if len(self._by_id) >= _MAX_SESSIONS:  # drop the oldest (dicts keep insertion order)
                self._by_id.pop(next(iter(self._by_id)))
            self._by_id[sid] = _Session(token, csrf, time.monotonic() + SESSION_TTL)
        return sid, csrf

    def get(self, sid: str | None) -> _Session | None:
        if not sid:
            return None
        with self._lock:
            found = self._by_id.get(sid)
            if found is not None and found.expires < time.monotonic():
                del self._by_id[sid]
                return None
            return found

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


def _cookie_counts(request: Request) -> bool:
    path = request.url.path
    if not path.startswith("/_fluxnb/") or path.startswith("/_fluxnb/run/"):
        return False
    return request.method in ("GET", "HEAD") or path.startswith("/_fluxnb/dashboard/")


def session_authorization(request: Request) -> str:
    """``Key <token>`` of the request's login cookie where the cookie counts (fluxnb's pages,
    files and dashboard actions), else ``""``."""
    if not _cookie_counts(request):
        return ""
    found = Sessions.of(request.app).get(request.cookies.get(COOKIE))
    return f"Key {found.token}" if found is not None else ""
