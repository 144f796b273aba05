"""The laptop server (no key, no roster, loopback) answers only its own Host and only JSON bodies.

DNS rebinding (a page whose name resolves to 127.0.0.1 sends ``Host: evil.example:8000``) and a
cross-site "simple" POST (``text/plain``, a form, a typeless blob) are refused; fluxnb's own
client, ``fluxnb.connect()`` and raw JSON pass; a keyed server is not guarded.
"""

from __future__ import annotations

import json

import httpx
import pytest

import fluxnb
from fluxnb.server import BackgroundServer, ServerConfig
from fluxnb.server.guard import guarded
from tests.conftest import make_test_image, make_test_mask
from tests.server.test_server_contract import SUBMIT, body


def test_which_servers_are_guarded() -> None:
    assert guarded(ServerConfig()) and guarded(ServerConfig(host="localhost"))
    assert guarded(ServerConfig(host="::1"))
    assert not guarded(ServerConfig(key="k"))
    assert not guarded(ServerConfig(host="0.0.0.0"))


@pytest.mark.parametrize("host", ["evil.example:8000", "evil.example", "127.0.0.1.nip.io:{port}",
                                  "localhost.evil.example:{port}", "10.0.0.5:{port}",
                                  "127.0.0.1:1", "", "[::1"])
def test_a_foreign_host_is_refused(null_server: BackgroundServer, host: str) -> None:
    host = host.format(port=null_server.port)
    for method, extra in (("GET", {}), ("POST", {"json": body(seed=1)})):
        r = httpx.request(method, null_server.base_url + SUBMIT if method == "POST"
                          else null_server.base_url + "/_fluxnb/info", headers={"Host": host},
                          **extra)  # type: ignore[arg-type]
        assert r.status_code == 421, (host, r.text)
        detail = r.json()["detail"]
        assert repr(host)[1:-1] in detail and "127.0.0.1:<port>" in detail and "--key" in detail


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}",
                                  "127.0.0.2:{port}"])
def test_its_own_loopback_names_pass(null_server: BackgroundServer, host: str) -> None:
    r = httpx.get(null_server.base_url + "/_fluxnb/info",
                  headers={"Host": host.format(port=null_server.port)})
    assert r.status_code == 200


@pytest.mark.parametrize(("kind", "shown"), [("text/plain", "'text/plain'"),
                                             ("text/plain;charset=UTF-8", "'text/plain;charset=UTF-8'"),
                                             ("application/x-www-form-urlencoded", "'application/x-www"),
                                             ("multipart/form-data; boundary=x", "'multipart/form-data"),
                                             (None, "none")])
def test_a_body_that_is_not_json_is_refused(null_server: BackgroundServer, kind: str | None,
                                            shown: str) -> None:
    raw = json.dumps(body(seed=1)).encode()  # valid JSON: only the declared type is wrong
    headers = {"Content-Type": kind} if kind else {}
    r = httpx.post(null_server.base_url + SUBMIT, content=raw, headers=headers)
    assert r.status_code == 415, r.text
    assert shown in r.json()["detail"] and "application/json" in r.json()["detail"]
    assert httpx.put(null_server.base_url + "/fal-ai/flux-lora/requests/x/cancel", content=raw,
                     headers=headers).status_code == 415


def test_json_bodies_and_bodyless_puts_pass(null_server: BackgroundServer) -> None:
    r = httpx.post(null_server.base_url + SUBMIT, content=json.dumps(body(seed=2)).encode(),
                   headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200, r.text
    assert httpx.put(r.json()["cancel_url"]).status_code in (202, 400)


def test_a_keyed_server_is_not_guarded(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(engine="null", key="k-1")
    auth = {"Authorization": "Key k-1"}
    r = httpx.post(server.base_url + SUBMIT, json=body(seed=3),
                   headers={**auth, "Host": "fal.example.test:8443"})
    assert r.status_code == 200 and r.json()["response_url"].startswith("http://fal.example.test:8443/")
    r = httpx.post(server.base_url + SUBMIT, content=b"prompt=x",
                   headers={**auth, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422


def test_fluxnb_connect_runs_a_job_through_the_guard() -> None:
    client = fluxnb.connect(quiet=True)
    with client:
        result = client.run(prompt="p", image_url=make_test_image(), mask_url=make_test_mask(),
                            seed=4)
    assert result.raw["engine"] == "preview"

