"""``fluxnb.connect()`` picks the backend and says which, once; FAL_KEY only ever goes to fal."""

from __future__ import annotations

import httpx
import pytest

import fluxnb
from fluxnb.client import AsyncQueueClient, QueueClient
from fluxnb.protocol import DEFAULT_BASE_URL

from .conftest import make_test_image, make_test_mask


def test_without_a_key_it_starts_the_embedded_server_and_says_so_once(capsys) -> None:
    first = fluxnb.connect()
    second = fluxnb.connect()
    err = capsys.readouterr().err
    assert err.count("embedded local server") == 1 and "not a generative model" in err
    assert first.base_url == second.base_url and first.base_url.startswith("http://127.0.0.1:")
    with first:
        result = first.run(prompt="p", image_url=make_test_image(), mask_url=make_test_mask(), seed=1)
    assert result.raw["engine"] == "preview"
    assert result.pil_images()[0].size == (96, 64)


def test_with_fal_key_it_targets_fal_without_any_request(fal_key_env: str, capsys) -> None:
    client = fluxnb.connect()
    assert isinstance(client, QueueClient)
    assert client.base_url == DEFAULT_BASE_URL
    assert "fal.ai" in capsys.readouterr().err
    assert fal_key_env not in repr(client)
    client.close()


def test_base_url_wins_and_fal_key_is_not_sent_there(fal_key_env: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        rid = "abc"
        base = "http://gpu.example/fal-ai/flux-lora/requests/" + rid
        return httpx.Response(200, json={"status": "IN_QUEUE", "request_id": rid, "response_url": base,
                                         "status_url": base + "/status", "cancel_url": base + "/cancel",
                                         "logs": None, "metrics": {}, "queue_position": 0})

    client = fluxnb.connect("http://gpu.example", transport=httpx.MockTransport(handler), quiet=True)
    job = client.submit(prompt="p", image_url="https://x/i.png", mask_url="https://x/m.png")
    assert job.request_id == "abc"
    assert seen and "authorization" not in seen[0].headers
    assert str(seen[0].url) == "http://gpu.example/fal-ai/flux-lora/inpainting"


def test_an_explicit_key_for_a_shared_server_is_sent(server_factory) -> None:
    server = server_factory(port=0, key="class-secret")
    with fluxnb.connect(server.base_url, key="class-secret", quiet=True) as client:
        result = client.run(prompt="p", image_url=make_test_image(), mask_url=make_test_mask())
    assert result.images


def test_asynchronous_gives_the_async_twin() -> None:
    client = fluxnb.connect(asynchronous=True, quiet=True)
    assert isinstance(client, AsyncQueueClient)


@pytest.mark.parametrize("name", ["FLUXNB_BASE_URL"])
def test_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "http://box.example:8000")
    client = fluxnb.connect(quiet=True)
    assert client.base_url == "http://box.example:8000"
    client.close()
