"""Connection limits uvicorn lacks: header and body read timeouts, a cap per client address, fds.

uvicorn has no header-read timeout, so a few hundred half-sent requests (slowloris) hold the
server's file descriptors until none are left. :func:`guarded_protocol` returns uvicorn's h11
protocol with three limits added, one set per server (pass it as ``http=`` to
``uvicorn.Config``; :mod:`~fluxnb.server.host` does, TLS included):

- ``header_timeout``: a request's line and headers must arrive within this many seconds of the
  connection opening (or of the first byte of a later request on a kept-alive connection);
  else ``408`` and the connection closes.
- ``body_timeout``: the whole body must arrive within this many seconds of the headers, however
  it trickles in (a total deadline, not an idle one: a 64 MiB body needs about 2 MiB/s at 30 s).
- ``max_connections_per_address``: more open connections from one client address are answered
  ``503`` at once and closed. A class behind one NAT address shares one count: raise the cap
  there (128 is many browser tabs and notebooks, not a whole lab).

The idle time between kept-alive requests stays uvicorn's ``timeout_keep_alive``. With TLS a
connection counts once its handshake completes; asyncio's own 60 s handshake timeout bounds a
stalled handshake. :func:`raise_fd_limit` lifts ``RLIMIT_NOFILE`` towards its hard limit at start.

>>> from fluxnb.server import ServerConfig
>>> protocol = guarded_protocol(ConnectionLimits.of(ServerConfig(header_timeout=5)))
>>> protocol.limits.header_timeout, protocol.limits.max_per_address
(5, 128)
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h11
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import ServerConfig

__all__ = ["ConnectionLimits", "GuardedH11Protocol", "guarded_protocol", "quiet_disconnects",
           "raise_fd_limit"]

logger = logging.getLogger("fluxnb.server")

#: fds the server asks for at most (enough for thousands of connections; the hard limit may be lower)
_FD_WANT = 65536
#: below this many fds the server logs a warning at start
_FD_LOW = 4096


@dataclass(frozen=True)
class ConnectionLimits:
    """The three limits of one server (seconds, seconds, connections).

    >>> ConnectionLimits(header_timeout=10, body_timeout=30, max_per_address=128).body_timeout
    30
    """

    header_timeout: float
    body_timeout: float
    max_per_address: int

    @classmethod
    def of(cls, config: ServerConfig) -> ConnectionLimits:
        """The limits a :class:`ServerConfig` asks for."""
        return cls(config.header_timeout, config.body_timeout, config.max_connections_per_address)


@dataclass
class _AddressBook:
    """Open connections per client address, for one server (touched only on its event loop)."""

    open: dict[str, int] = field(default_factory=dict)
    #: addresses refused since their count last fell to 0 (logged once, not once per connection)
    refused: set[str] = field(default_factory=set)

    def take(self, address: str, cap: int) -> bool:
        count = self.open.get(address, 0)
        if count >= cap:
            if address not in self.refused:
                self.refused.add(address)
                logger.warning("refusing connections from %s: %d open, the most one address may "
                               "hold (max_connections_per_address)", address, cap)
            return False
        self.open[address] = count + 1
        return True

    def give_back(self, address: str) -> None:
        count = self.open.get(address, 0) - 1
        if count > 0:
            self.open[address] = count
        else:
            self.open.pop(address, None)
            self.refused.discard(address)


def _address(client: tuple[str, int] | None) -> str | None:
    if not client:
        return None
    host = str(client[0])
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def _answer(status: int, reason: str, detail: str, extra: str = "") -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n")
    return head.encode("latin-1") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header/body deadlines and a per-address connection cap.

    Use a subclass from :func:`guarded_protocol` (it carries one server's limits and counts).
    """

    limits: ClassVar[ConnectionLimits]
    book: ClassVar[_AddressBook]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._counted: str | None = None
        self._refused = False

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = _address(self.client)
        if address is not None:
            if not self.book.take(address, self.limits.max_per_address):
                self._refused = True
                cap = self.limits.max_per_address
                transport.write(_answer(
                    503, "Service Unavailable",
                    f"Too many open connections from {address} (the limit is {cap} per address); "
                    "close some connections and retry.", "retry-after: 5\r\n"))
                transport.close()
                return
            self._counted = address
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._counted is not None:
            self.book.give_back(self._counted)
            self._counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        self._rearm()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """The connection leaves this protocol: it stops counting (host.py turns ws off anyway)."""
        self._cancel_timers()
        if self._counted is not None:
            self.book.give_back(self._counted)
            self._counted = None
        super().handle_websocket_upgrade(event)

    def _unsupported_upgrade_warning(self) -> None:
        logger.debug("ignored an Upgrade header (this server speaks HTTP/1.1 only)")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._rearm()

    # -- the deadlines -------------------------------------------------------------------------
    def _rearm(self) -> None:
        """Start or stop the deadlines for where the client is in its request."""
        if self.transport.is_closing():
            self._cancel_timers()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            self._cancel(body=True)
            if self._header_timer is None and self.conn.trailing_data[0]:
                self._header_timer = self.loop.call_later(self.limits.header_timeout,
                                                          self._headers_late)
        elif state is h11.SEND_BODY:
            self._cancel(body=False)
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_late)
        else:
            self._cancel_timers()

    def _cancel(self, *, body: bool) -> None:
        timer = self._body_timer if body else self._header_timer
        if timer is not None:
            timer.cancel()
        if body:
            self._body_timer = None
        else:
            self._header_timer = None

    def _cancel_timers(self) -> None:
        self._cancel(body=False)
        self._cancel(body=True)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        self._time_out(f"The request's headers did not arrive within {self.limits.header_timeout:g} s "
                       "(the server's header_timeout); send the whole request at once.", answer=True)

    def _body_late(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        self._time_out(f"The request's body did not arrive within {self.limits.body_timeout:g} s "
                       "of its headers (the server's body_timeout); send it faster or smaller.",
                       answer=self.cycle is None or not self.cycle.response_started)

    def _time_out(self, detail: str, *, answer: bool) -> None:
        """Close the connection, with a 408 first when no response has begun."""
        logger.debug("closed a connection from %s: %s", self._counted or "?", detail)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() answers http.disconnect
            cycle.message_event.set()
        if answer:
            self.transport.write(_answer(408, "Request Timeout", detail))
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class for one server: its limits and its own per-address counts.

    >>> cls = guarded_protocol(ConnectionLimits(10, 30, 128))
    >>> cls.book.open
    {}
    """
    class FluxnbH11Protocol(GuardedH11Protocol):
        pass

    FluxnbH11Protocol.limits = limits
    FluxnbH11Protocol.book = _AddressBook()
    return FluxnbH11Protocol


def quiet_disconnects(app: Any) -> Any:
    """Wrap an ASGI app so a client gone mid-body (a timed-out slow body) is no logged traceback.

    >>> quiet_disconnects(print) is not print
    True
    """
    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except ClientDisconnect:
            logger.debug("the client went away while its request body was read")

    return wrapped


def raise_fd_limit(want: int = _FD_WANT) -> int | None:
    """Raise this process's soft ``RLIMIT_NOFILE`` towards the hard limit; the soft limit after.

    Logs a warning when it stays below a few thousand (each connection holds one fd).

    >>> raise_fd_limit() is None or raise_fd_limit() > 0
    True
    """
    try:
        import resource
    except ImportError:  # Windows: no rlimits
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(hard, want)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return int(soft)
    for candidate in (target, 10240):
        if candidate <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (candidate, hard))
        except (ValueError, OSError):
            continue
        soft = candidate
        break
    if soft < _FD_LOW:
        logger.warning("only %d file descriptors (ulimit -n; hard limit %s): the server holds one "
                       "per connection; raise the hard limit for a class (e.g. ulimit -Hn 65536)",
                       soft, "unlimited" if hard == resource.RLIM_INFINITY else hard)
    return int(soft)
