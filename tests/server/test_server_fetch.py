"""What the server may fetch (issue 11, item 10): ``image_url`` / ``mask_url`` downloads go only
to public http(s) addresses unless an option says otherwise, every hop is checked before any
connection and pinned to the checked address, and every failure reads the same.

No test sends a packet anywhere but 127.0.0.1: private and public targets are resolved by a fake
resolver and their connects are intercepted in-process (``socket.create_connection``)."""

from __future__ import annotations

import http.server
import importlib
import io
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

import fluxnb.server.pinned as pinned
from fluxnb.cli import main
from fluxnb.server import BackgroundServer, ServerConfig
from fluxnb.server.inputs import FetchPolicy, ImageLimits, InputError, fetch_image
from tests.server.test_server_contract import result, submit, wait_for

UNIFORM = "the server could not fetch this URL (only public http(s) addresses are fetched)"
SECRET = (12, 34, 56)  # the colour of the listener's "internal" picture
PUBLIC_NAME = "images.example.com"
PUBLIC_IP = "93.184.216.34"  # a public address: only ever "connected to" through the fake below


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class Listener(http.server.ThreadingHTTPServer):
    """A loopback http server of the test's own that counts the connections it accepts."""

    def __init__(self) -> None:
        self.accepts = 0
        self.hosts: list[str] = []
        self.redirect_to = ""
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn = super().get_request()
        self.accepts += 1
        return conn

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Listener

    def do_GET(self) -> None:  # noqa: N802
        self.server.hosts.append(self.headers.get("Host", ""))
        if self.path == "/secret.png":
            self._send(200, _png(Image.new("RGB", (96, 64), SECRET)), "image/png")
        elif self.path == "/text":
            self._send(200, b"not a picture at all", "text/plain")
        elif self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"no", "text/plain")

    def _send(self, code: int, data: bytes, mime: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def _start_listener() -> Listener:
    server = Listener()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture()
def listener() -> Iterator[Listener]:
    server = _start_listener()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def second_listener() -> Iterator[Listener]:
    server = _start_listener()
    yield server
    server.shutdown()
    server.server_close()


class Net:
    """A fake resolver and an in-process connect interceptor.

    ``names`` maps host names to the addresses the fake resolver gives; ``routes`` maps a
    (public) address and port to the loopback port that stands in for it; ``passthrough`` are
    loopback ports really connected to (the server under test, for the test's own requests).
    Every other connect is recorded in ``refused`` and fails without touching the network."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.resolved: list[str] = []
        self.routes: dict[tuple[str, int], int] = {}
        self.passthrough: set[int] = set()
        self.connected: list[tuple[str, int]] = []
        self.refused: list[tuple[str, int]] = []


@pytest.fixture()
def net(monkeypatch: pytest.MonkeyPatch) -> Net:
    state = Net()
    real_resolve = pinned._resolve
    real_connect = socket.create_connection

    def resolve(host: str, port: int) -> list[str]:
        state.resolved.append(host)
        if host in state.names:
            return list(state.names[host])
        return real_resolve(host, port)  # IP literals only: getaddrinfo answers without the network

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        host, port = str(address[0]), int(address[1])
        if (host, port) in state.routes:
            state.connected.append((host, port))
            return real_connect(("127.0.0.1", state.routes[host, port]), *args, **kwargs)
        if host == "127.0.0.1" and port in state.passthrough:
            return real_connect((host, port), *args, **kwargs)
        state.refused.append((host, port))
        raise ConnectionRefusedError(f"the test refuses {host}:{port}")

    monkeypatch.setattr(pinned, "_resolve", resolve)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return state


def _failure(job: dict[str, Any]) -> tuple[str, Any]:
    done = wait_for(job, timeout=30)
    r = result(job)
    assert r.status_code == 422, r.text
    assert done["error_type"] == r.headers["X-Fal-Error-Type"]
    return done["error_type"], r.json()["detail"]


def _port(server: BackgroundServer) -> int:
    """The server's own port: the test's requests to it are really connected."""
    port = httpx.URL(server.base_url).port
    assert port is not None
    return port


def _uniform(field: str, message: str = UNIFORM) -> list[dict[str, Any]]:
    return [{"loc": ["body", field], "msg": f"{field}: {message}", "type": "file_download_error"}]


# -- a default server and a listener of the test's own on another loopback port ----------------


def test_a_default_server_never_connects_to_a_loopback_listener(
        server_factory: Callable[..., BackgroundServer], listener: Listener) -> None:
    server = server_factory(engine="null")
    assert httpx.get(listener.url + "/secret.png").status_code == 200  # it does serve the secret
    seen = listener.accepts
    for field in ("image_url", "mask_url"):
        for url in (f"{listener.url}/secret.png", f"http://localhost:{listener.port}/secret.png",
                    f"http://127.1:{listener.port}/secret.png",
                    f"http://2130706433:{listener.port}/secret.png",
                    f"http://[::ffff:127.0.0.1]:{listener.port}/secret.png"):
            assert _failure(submit(server, **{field: url})) == ("file_download_error", _uniform(field)), url
    assert listener.accepts == seen  # not one connection
    assert not server.service.stats["jobs"].get("completed")


@pytest.mark.parametrize("url", [
    "http://10.0.0.1/x.png", "http://172.16.5.4/x.png", "https://192.168.1.1/x.png",
    "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/x.png", "http://0.0.0.0/x.png",
    "http://224.0.0.1/x.png", "http://240.0.0.1/x.png", "http://[fd00::1]/x.png",
    "http://[fe80::1]/x.png", "http://[::1]/x.png", "http://[::]/x.png", "http://[ff02::1]/x.png",
    "http://[::ffff:10.0.0.1]/x.png", "http://[::ffff:169.254.169.254]/x.png",
    "http://[64:ff9b::a9fe:a9fe]/x.png", "http://[2002:a00:1::]/x.png",
    "http://metadata.test/computeMetadata/v1/", "http://mixed.test/x.png",
    "ftp://images.example.com/x.png", "file:///etc/passwd",
])
def test_private_and_reserved_targets_are_refused_before_any_connection(
        net: Net, url: str, caplog: pytest.LogCaptureFixture) -> None:
    net.names["metadata.test"] = ["169.254.169.254"]
    net.names["mixed.test"] = [PUBLIC_IP, "10.1.2.3"]  # every address counts, not only the first
    caplog.set_level(logging.INFO, logger="fluxnb.server")
    with pytest.raises(InputError) as info:
        fetch_image(url, "mask_url", ImageLimits(), timeout=2)
    assert str(info.value) == f"mask_url: {UNIFORM}"
    assert info.value.detail() == _uniform("mask_url")
    assert net.refused == [] and net.connected == []  # create_connection was never called
    assert "refused" in caplog.text  # the reason goes to the server log


def test_a_default_server_refuses_a_private_target_without_connecting(
        server_factory: Callable[..., BackgroundServer], net: Net) -> None:
    server = server_factory(engine="null")
    net.passthrough.add(_port(server))
    for url in ("http://10.0.0.1/x.png", "http://169.254.169.254/latest/meta-data/",
                "http://[fd00::1]/x.png"):
        assert _failure(submit(server, image_url=url)) == ("file_download_error", _uniform("image_url"))
    assert net.refused == [] and net.connected == []


# -- pinning and redirects -------------------------------------------------------------------


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(
        net: Net, listener: Listener) -> None:
    net.names[PUBLIC_NAME] = [PUBLIC_IP]
    net.routes[PUBLIC_IP, 8080] = listener.port
    img = fetch_image(f"http://{PUBLIC_NAME}:8080/secret.png", "image_url", ImageLimits(), timeout=5)
    assert img.getpixel((0, 0)) == SECRET
    assert net.resolved == [PUBLIC_NAME]  # resolved once: nothing resolves it again at connect
    assert net.connected == [(PUBLIC_IP, 8080)] and net.refused == []
    assert listener.hosts == [f"{PUBLIC_NAME}:8080"]


def test_a_redirect_to_loopback_is_refused(server_factory: Callable[..., BackgroundServer], net: Net,
                                           listener: Listener, second_listener: Listener) -> None:
    server = server_factory(engine="null")
    net.passthrough.add(_port(server))
    net.names[PUBLIC_NAME] = [PUBLIC_IP]
    net.routes[PUBLIC_IP, 80] = listener.port  # the allowed first hop
    for target in (f"{second_listener.url}/secret.png", "http://169.254.169.254/latest/meta-data/",
                   f"http://localhost:{second_listener.port}/secret.png"):
        listener.redirect_to = target
        assert _failure(submit(server, image_url=f"http://{PUBLIC_NAME}/redirect")) == (
            "file_download_error", _uniform("image_url"))
    assert listener.hosts == [PUBLIC_NAME] * 3  # the first hop was fetched each time...
    assert second_listener.accepts == 0 and net.refused == []  # ...the redirect never followed


def test_redirects_are_capped(net: Net, listener: Listener) -> None:
    net.names[PUBLIC_NAME] = [PUBLIC_IP]
    net.routes[PUBLIC_IP, 80] = listener.port
    listener.redirect_to = f"http://{PUBLIC_NAME}/redirect"
    with pytest.raises(InputError) as info:
        fetch_image(f"http://{PUBLIC_NAME}/redirect", "image_url", ImageLimits(), timeout=5)
    assert info.value.detail() == _uniform("image_url")
    assert len(listener.hosts) == 4  # the first request and 3 redirects


# -- one message for every failure -----------------------------------------------------------


def test_every_fetch_failure_reads_the_same(server_factory: Callable[..., BackgroundServer], net: Net,
                                            listener: Listener,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fluxnb.server")
    server = server_factory(engine="null")
    net.passthrough.add(_port(server))
    net.names[PUBLIC_NAME] = [PUBLIC_IP]
    net.names["closed.example.com"] = ["93.184.216.35"]  # connection refused (by the fake)
    net.routes[PUBLIC_IP, 80] = listener.port
    urls = {"refused address": f"{listener.url}/secret.png",
            "connection refused": "http://closed.example.com/x.png",
            "404": f"http://{PUBLIC_NAME}/missing", "not an image": f"http://{PUBLIC_NAME}/text",
            "declared size": f"http://{PUBLIC_NAME}/big", "bad URL": "http://[zz/x.png"}
    answers = {kind: _failure(submit(server, mask_url=url)) for kind, url in urls.items()}
    expected = ("file_download_error", _uniform("mask_url"))
    assert all(answer == expected for answer in answers.values()), answers
    for words in ("127.0.0.1 (loopback)", "ConnectError", "HTTP 404", "cannot decode", "bytes; the limit"):
        assert words in caplog.text  # the details are for the operator only
    assert "/missing" not in caplog.text  # paths and queries may carry tokens: not logged


# -- the options -----------------------------------------------------------------------------


def test_allow_private_fetch_lets_the_loopback_listener_through(
        server_factory: Callable[..., BackgroundServer], listener: Listener) -> None:
    server = server_factory(engine="null", allow_private_fetch=True)
    job = submit(server, image_url=f"{listener.url}/secret.png", output_format="png")
    wait_for(job)
    url = result(job).json()["images"][0]["url"]
    assert Image.open(io.BytesIO(httpx.get(url).content)).convert("RGB").getpixel((0, 0)) == SECRET
    assert listener.accepts >= 1
    # still one message for failures, without the "public only" words
    failed = submit(server, image_url=f"{listener.url}/missing")
    assert _failure(failed) == ("file_download_error",
                                _uniform("image_url", "the server could not fetch this URL"))


def test_metadata_addresses_stay_refused_even_with_allow_private_fetch(net: Net) -> None:
    limits = ImageLimits(fetch=FetchPolicy(allow_private=True))
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/",
                "http://[::ffff:169.254.169.254]/"):
        with pytest.raises(InputError):
            fetch_image(url, "image_url", limits, timeout=2)
    assert net.refused == [] and net.connected == []


def test_the_loopback_policy_allows_loopback_only(net: Net, listener: Listener) -> None:
    limits = ImageLimits(fetch=FetchPolicy(allow_loopback=True))
    net.passthrough.add(listener.port)
    img = fetch_image(f"{listener.url}/secret.png", "image_url", limits, timeout=5)
    assert img.getpixel((0, 0)) == SECRET and listener.accepts == 1
    for url in ("http://10.0.0.1/x.png", "http://169.254.169.254/", "http://[fd00::1]/"):
        with pytest.raises(InputError) as info:
            fetch_image(url, "image_url", limits, timeout=2)
        assert info.value.detail() == _uniform("image_url")
    assert net.connected == []


def test_serve_allow_private_fetch_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    import fluxnb.server as server_pkg

    seen: list[ServerConfig] = []
    monkeypatch.setattr(server_pkg, "serve", seen.append)
    assert main(["serve", "--engine", "null", "--allow-private-fetch"]) == 0
    assert main(["serve", "--engine", "null"]) == 0
    assert [c.allow_private_fetch for c in seen] == [True, False]
    assert not any(c.fetch_allow_loopback for c in seen)


def test_the_embedded_laptop_server_allows_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import fluxnb.server as server_pkg

    connect = importlib.import_module("fluxnb.connect")  # fluxnb.connect is also the function

    made: list[ServerConfig] = []

    class Fake:
        def __init__(self, config: ServerConfig) -> None:
            made.append(config)

        def start(self) -> Fake:
            return self

        def stop(self) -> None:
            pass

    monkeypatch.setattr(server_pkg, "BackgroundServer", Fake)
    monkeypatch.setattr(connect, "_servers", {})
    monkeypatch.setattr(connect.atexit, "register", lambda fn: fn)
    connect.embedded_server("null")
    [config] = made
    assert config.fetch_allow_loopback and not config.allow_private_fetch
    assert config.host == "127.0.0.1"
