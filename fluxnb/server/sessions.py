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
_PER_TOKEN = 16  # logins one token keeps at once (its oldest go first)


@dataclass
class _Session:
    token: str = field(repr=False)
    csrf: str = field(repr=False)
    expires: float


class Sessions:
    """Login sessions of one app: random id -> (token, CSRF token), kept in memory for 12 h (a
    restart logs everyone out; the oldest go beyond 10,000, and a token's own oldest beyond 16
    of its own, so one person's logins cannot log the others out). Thread-safe.

    >>> Sessions().get(None) is None
    True
    """

    _create = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, _Session] = {}
        self._by_token: dict[str, list[str]] = {}  # token -> its session ids, oldest first

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
            # one token's logins cannot push out everyone else's: past _PER_TOKEN, its own oldest go
            mine = self._by_token.setdefault(token, [])
            while len(mine) >= _PER_TOKEN:
                self._by_id.pop(mine.pop(0), None)
            while len(self._by_id) >= _MAX_SESSIONS:  # drop the oldest (dicts keep insertion order)
                self._pop_locked(next(iter(self._by_id)))
            self._by_id[sid] = _Session(token, csrf, time.monotonic() + SESSION_TTL)
            mine.append(sid)
        return sid, csrf

    def _pop_locked(self, sid: str) -> None:
        found = self._by_id.pop(sid, None)
        if found is not None:
            mine = self._by_token.get(found.token, [])
            if sid in mine:
                mine.remove(sid)
            if not mine:
                self._by_token.pop(found.token, None)

    def get(self, sid: str | None) -> _Session | None:
        if not sid:
            return None
        with self._lock:
            found = self._by_id.get(sid)
            if found is not None and found.expires < time.monotonic():
                self._pop_locked(sid)
                return None
            return found

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._pop_locked(sid or "")


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
