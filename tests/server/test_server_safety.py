"""The local server's guards: body and image limits, pixel bombs, API key, what it logs."""

from __future__ import annotations

import base64
import logging
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from fluxnb.server import BackgroundServer, ServerConfig, serve
from tests.server.test_server_contract import IMAGE_URI, MASK_URI, SUBMIT, body, wait_for


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but carries almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def b64_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.mark.parametrize("side", [8000, 11000, 20000])
def test_pixel_bombs_are_422_before_decoding(live_server: BackgroundServer, side: int) -> None:
    # 8000^2 trips the server's own 50 MP limit; 11000^2 and 20000^2 trip Pillow's
    # DecompressionBombWarning / DecompressionBombError first. None of them is ever decoded.
    r = httpx.post(live_server.base_url + SUBMIT, json=body(image_url=b64_uri(png_header(side, side))))
    assert r.status_code == 422, r.text
    item = r.json()["detail"][0]
    assert item["loc"] == ["body", "image_url"] and item["type"] == "image_too_large"


def test_image_size_over_pixel_limit_is_422(live_server: BackgroundServer) -> None:
    r = httpx.post(live_server.base_url + SUBMIT, json=body(image_size={"width": 14000, "height": 14000}))
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "image_size"]


def test_image_byte_limit(server_factory: Callable[..., BackgroundServer]) -> None:
    server = server_factory(engine="null", port=0, max_image_bytes=200)
    r = httpx.post(server.base_url + SUBMIT, json=body())
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "image_too_large"


def test_body_cap_is_413(server_factory: Callable[..., BackgroundServer]) -> None:
    server = server_factory(engine="null", port=0, max_body_bytes=4096)
    url = server.base_url + SUBMIT
    big = body(prompt="x" * 10_000)
    r = httpx.post(url, json=big)  # Content-Length says too much
    assert r.status_code == 413 and isinstance(r.json()["detail"], str)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the bytes read are counted
        for _ in range(10):
            yield b" " * 1000

    r = httpx.post(url, content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert server.service.stats["jobs"]["rejected"] == 2
    assert httpx.post(url, json=body(image_url="http://127.0.0.1:1/x.png",
                                     mask_url="http://127.0.0.1:1/m.png")).status_code == 200


def test_key_is_required_and_never_logged(server_factory: Callable[..., BackgroundServer],
                                          caplog: pytest.LogCaptureFixture) -> None:
    key = "fake-id:fake-secret-7d2c"
    caplog.set_level(logging.DEBUG)
    server = server_factory(engine="null", port=0, key=key)
    url = server.base_url + SUBMIT
    assert key not in repr(server.config)
    for headers in ({}, {"Authorization": "Key wrong"}, {"Authorization": f"Bearer {key}"},
                    {"Authorization": key}, {"Authorization": "Key " + key[:-1]}):
        r = httpx.post(url, json=body(), headers=headers)
        assert r.status_code == 401, headers
        assert isinstance(r.json()["detail"], str)
        assert key not in r.text
    good = {"Authorization": f"Key {key}"}
    r = httpx.post(url, json=body(), headers=good)
    assert r.status_code == 200
    job = r.json()
    for method, target in (("GET", job["status_url"]), ("GET", job["response_url"]),
                           ("GET", job["status_url"] + "/stream"), ("PUT", job["cancel_url"])):
        assert httpx.request(method, target).status_code == 401
    done = wait_for(job, headers=good)
    assert done["status"] == "COMPLETED"
    assert httpx.get(job["response_url"], headers=good).status_code == 200
    assert httpx.get(job["status_url"], params={"logs": 1}, headers=good).status_code == 200
    assert key not in caplog.text
    assert "fluxnb server listening" in caplog.text


def test_server_logs_no_bodies_or_headers(live_server: BackgroundServer,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Key sekrit-never-logged"
    r = httpx.post(live_server.base_url + SUBMIT, json=body(seed=1), headers={"Authorization": secret})
    wait_for(r.json())
    httpx.post(live_server.base_url + SUBMIT, json=body(mask_url="data:image/png;base64,AAAA"))
    assert "sekrit" not in caplog.text
    assert IMAGE_URI[30:80] not in caplog.text and MASK_URI[30:80] not in caplog.text


def test_serve_startup_line(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import fluxnb.server.runner as runner

    ran: list[Any] = []
    monkeypatch.setattr(runner.uvicorn.Server, "run", lambda self, sockets=None: ran.append(self))
    caplog.set_level(logging.INFO, logger="fluxnb.server")
    serve(ServerConfig(host="127.0.0.1", port=8765, engine="preview", workers=3, key="top-secret-key"))
    assert ran and ran[0].config.host == "127.0.0.1" and ran[0].config.port == 8765
    line = caplog.text
    for part in ("127.0.0.1", "8765", "engine=preview", "workers=3",
                 "a preview engine, not a generative model"):
        assert part in line
    assert "top-secret-key" not in line


def test_busy_port_falls_back_to_a_free_one(server_factory: Callable[..., BackgroundServer]) -> None:
    first = server_factory(engine="null", port=0)
    second = server_factory(engine="null", port=first.port)
    assert second.port != first.port
    assert httpx.get(second.base_url + "/_fluxnb/info").status_code == 200


def test_binds_loopback_by_default() -> None:
    with BackgroundServer(ServerConfig(engine="null", port=0)) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/_fluxnb/info", timeout=2)


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError):
        ServerConfig(workers=0)
    with pytest.raises(ValueError):
        ServerConfig(certfile="c.pem")


def test_http_download_byte_cap(live_server: BackgroundServer,
                                server_factory: Callable[..., BackgroundServer]) -> None:
    source = httpx.post(live_server.base_url + SUBMIT, json=body(seed=1, output_format="png")).json()
    wait_for(source)
    url = httpx.get(source["response_url"]).json()["images"][0]["url"]
    assert len(httpx.get(url).content) > 4000
    server = server_factory(engine="null", port=0, max_image_bytes=4000, fetch_allow_loopback=True)
    job = httpx.post(server.base_url + SUBMIT, json=body(image_url=url)).json()
    done = wait_for(job)
    assert done["error_type"] == "image_too_large"
    r = httpx.get(job["response_url"])
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "image_url"]
