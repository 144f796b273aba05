"""Slowloris and friends: header/body read timeouts, the per-address cap, enough fds.

Half-open connections come from other loopback addresses (Linux routes all of 127/8 to lo): the
client socket is bound to ``(127.0.0.x, 0)`` before connecting to the server on 127.0.0.1. Every
flood is bounded in count and time and every socket is closed in a ``finally``.
"""

from __future__ import annotations

import resource
import selectors
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fluxnb.server import BackgroundServer, ServerConfig
from tests.server.test_server_contract import SUBMIT
from tests.support import ServeProcess, eventually, self_signed_cert, tls_context

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.x source addresses: Linux")

FLOOD = 1100
#: a typical default soft limit (``ulimit -n``) the server must lift itself
LOW_SOFT = 1024


@pytest.fixture
def fd_room() -> Iterator[tuple[int, int]]:
    """(soft, hard) RLIMIT_NOFILE of this process, restored after the test; skips when the hard
    limit cannot hold a flood's two ends in one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2500:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 2500: too few fds for {FLOOD} connections "
                    "(both ends in one process)")
    try:
        yield soft, hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _lower_soft(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, LOW_SOFT), hard))


def _half_open(port: int, count: int, source: str, socks: list[socket.socket]) -> None:
    """``count`` connections from ``source`` that send a request line and half a header."""
    partial = f"GET /_fluxnb/info HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode()
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        socks.append(sock)
        sock.bind((source, 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(partial)


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def _still_open(socks: list[socket.socket]) -> int:
    """How many sockets have neither data nor EOF waiting (the server has not closed them)."""
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        readable = sel.select(timeout=0)
    return len(socks) - len(readable)


def _read_to_eof(socks: list[socket.socket], timeout: float) -> dict[socket.socket, bytes]:
    """What each socket the server closed within ``timeout`` received before its EOF."""
    got = {sock: b"" for sock in socks}
    closed: set[socket.socket] = set()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                got[sock] += data
                if not data:
                    sel.unregister(sock)
                    closed.add(sock)
    return {sock: got[sock] for sock in closed}


def _open_from(server: Any, address: str) -> int:
    """Connections the server counts as open from ``address`` (its protocol's address book)."""
    return int(server._server.config.http.book.open.get(address, 0))


def _get(url: str, source: str = "127.0.0.1", **kw: Any) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source, verify=kw.pop("verify", True))
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(url, **kw)


def test_half_open_flood_does_not_stop_normal_requests(fd_room: tuple[int, int]) -> None:
    _lower_soft(*fd_room)  # like a laptop's default ulimit -n: the server must lift it
    config = ServerConfig(engine="null", port=0, header_timeout=120,
                          max_connections_per_address=FLOOD + 100)
    socks: list[socket.socket] = []
    with BackgroundServer(config) as server:
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 2 * FLOOD + 200
        try:
            _half_open(server.port, FLOOD, "127.0.0.2", socks)
            eventually(lambda: _open_from(server, "127.0.0.2") == FLOOD, 20)
            answers = [_get(server.base_url + "/_fluxnb/info").status_code for _ in range(6)]
            assert answers == [200] * 6
            assert _still_open(socks) == FLOOD  # the half-open ones were not dropped to make room
        finally:
            _close_all(socks)


def test_half_open_connections_are_closed_after_header_timeout(fd_room: tuple[int, int]) -> None:
    config = ServerConfig(engine="null", port=0, header_timeout=0.5,
                          max_connections_per_address=FLOOD + 100)
    socks: list[socket.socket] = []
    with BackgroundServer(config) as server:
        try:
            _half_open(server.port, FLOOD, "127.0.0.2", socks)
            got = _read_to_eof(socks, timeout=60)
            assert len(got) == FLOOD, "some half-open connections were still open after 60 s"
            assert all(data.startswith(b"HTTP/1.1 408 ") for data in got.values())
            assert b"header_timeout" in next(iter(got.values()))
            eventually(lambda: _open_from(server, "127.0.0.2") == 0, 10)
            assert _get(server.base_url + "/_fluxnb/info").status_code == 200
        finally:
            _close_all(socks)


def _refused(port: int, source: str) -> bytes:
    """What one more full request from ``source`` gets back (b"" when reset or closed unanswered)."""
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(f"GET /_fluxnb/info HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
        return data


def test_per_address_cap_refuses_the_129th_while_others_get_through() -> None:
    socks: list[socket.socket] = []
    with BackgroundServer(ServerConfig(engine="null", port=0)) as server:
        assert server.config.max_connections_per_address == 128
        try:
            _half_open(server.port, 128, "127.0.0.3", socks)
            eventually(lambda: _open_from(server, "127.0.0.3") == 128, 10)
            answer = _refused(server.port, "127.0.0.3")
            assert b" 200 " not in answer.partition(b"\r\n")[0]
            if answer:  # a 503 naming the limit (or a reset when it raced our request)
                assert answer.startswith(b"HTTP/1.1 503 ") and b"128 per address" in answer
            assert _get(server.base_url + "/_fluxnb/info", "127.0.0.4").status_code == 200
            assert _get(server.base_url + "/_fluxnb/info").status_code == 200
            socks.pop().close()  # one closes: the address may connect again
            eventually(lambda: _open_from(server, "127.0.0.3") == 127, 10)
            assert _get(server.base_url + "/_fluxnb/info", "127.0.0.3").status_code == 200
        finally:
            _close_all(socks)


def test_a_trickled_body_is_cut_off_after_body_timeout() -> None:
    with BackgroundServer(ServerConfig(engine="null", port=0, body_timeout=1)) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        length = 400
        sock.sendall(f"POST {SUBMIT} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{".encode())
        sent, answer = 1, b""
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            while sent < length:  # one byte each 50 ms: never idle, but 20 s for the whole body
                if sel.select(timeout=0.05):
                    answer = sock.recv(65536)
                    break
                try:
                    sock.sendall(b" ")
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 1
        assert sent < length, "the server read the whole trickled body"
        assert answer.startswith(b"HTTP/1.1 408 ") and b"body_timeout" in answer


def test_tls_connections_have_the_header_timeout_too(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    config = ServerConfig(engine="null", port=0, certfile=str(cert), keyfile=str(key),
                          header_timeout=0.5)
    with BackgroundServer(config) as server:
        assert _get(server.base_url + "/_fluxnb/info", verify=tls_context(cert)).status_code == 200
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with tls_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"GET /_fluxnb/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except ssl.SSLError:
                pass
        assert data.startswith(b"HTTP/1.1 408 ")


def test_fluxnb_serve_lifts_the_fd_limit_and_caps_per_address(fd_room: tuple[int, int]) -> None:
    """The CLI's serve() path: a child started under a low soft limit survives the flood."""
    _lower_soft(*fd_room)
    proc = ServeProcess(["--engine", "null"])  # inherits the low soft limit
    resource.setrlimit(resource.RLIMIT_NOFILE, fd_room)
    socks: list[socket.socket] = []
    try:
        with proc:
            sources = [f"127.0.0.{i}" for i in range(2, 12)]  # 10 x 110, each under the cap
            for source in sources:
                _half_open(proc.port, FLOOD // len(sources), source, socks)
            answers = [_get(proc.base_url + "/_fluxnb/info").status_code for _ in range(6)]
            assert answers == [200] * 6
            assert _still_open(socks) == FLOOD
            _half_open(proc.port, 128 - FLOOD // len(sources), "127.0.0.2", socks)
            answer = _refused(proc.port, "127.0.0.2")
            assert not answer or answer.startswith(b"HTTP/1.1 503 ")
            assert b" 200 " not in answer.partition(b"\r\n")[0]
    finally:
        _close_all(socks)


def test_upgrade_requests_do_not_leak_the_per_address_count() -> None:
    with BackgroundServer(ServerConfig(engine="null", port=0)) as server:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(f"GET /x HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                             "Connection: Upgrade\r\nUpgrade: websocket\r\n"
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             "Sec-WebSocket-Version: 13\r\n\r\n".encode())
                assert sock.recv(65536).startswith(b"HTTP/1.1 404 ")
        eventually(lambda: _open_from(server, "127.0.0.1") == 0, 10)
