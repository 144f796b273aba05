"""``fluxnb.connect()`` picks the backend and says which, once; FAL_KEY only ever goes to fal."""

from __future__ import annotations

import os

import httpx
import pytest

import fluxnb
from fluxnb.client import AsyncQueueClient, QueueClient
from fluxnb.errors import CredentialsError
from fluxnb.protocol import DEFAULT_BASE_URL

from ..conftest import make_test_image, make_test_mask


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


@pytest.mark.slow
def test_in_a_notebook_the_notice_is_an_html_note_not_stderr(tmp_path) -> None:
    """In a real IPython kernel the notice is display_data (text/html), never a stderr stream
    (Jupyter draws stderr as a pink box that reads as an error)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import fluxnb\nclient = fluxnb.connect()\n"
                                          "client = fluxnb.connect()")]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert [o for o in outputs if o.output_type == "stream" and o.name == "stderr"] == []
    notes = [o for o in outputs if o.output_type == "display_data"]
    assert len(notes) == 1                                   # said once for two connect() calls
    html = notes[0].data["text/html"]
    assert "fluxnb-note" in html and "embedded local server" in html


# -- one key rule for connect() and the client ---------------------------------------------------


def _fal_recorder(seen: list[httpx.Request]) -> httpx.MockTransport:
    """Stands in for fal.ai's host (no fal server can be reached from a test): records requests."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        base = "https://queue.fal.run/fal-ai/flux-lora/requests/abc"
        return httpx.Response(200, json={"status": "IN_QUEUE", "request_id": "abc", "response_url": base,
                                         "status_url": base + "/status", "cancel_url": base + "/cancel",
                                         "logs": None, "metrics": {}, "queue_position": 0})

    return httpx.MockTransport(handler)


def _submit(client: QueueClient) -> None:
    with client:
        client.submit(prompt="p", image_url="https://x/i.png", mask_url="https://x/m.png")


@pytest.mark.parametrize("present", ["FAL_KEY_ID", "FAL_KEY_SECRET"])
def test_half_of_fals_key_pair_is_one_error_for_connect_and_the_client(monkeypatch, present) -> None:
    value = "half-" + os.urandom(4).hex()
    monkeypatch.setenv(present, value)
    seen: list[httpx.Request] = []
    for build in (lambda: fluxnb.connect(transport=_fal_recorder(seen), quiet=True),
                  lambda: QueueClient(DEFAULT_BASE_URL, transport=_fal_recorder(seen))):
        with pytest.raises(CredentialsError) as info:
            build()
        text = str(info.value)
        assert "FAL_KEY_ID" in text and "FAL_KEY_SECRET" in text and "FAL_KEY=" in text
        assert value not in text and value not in repr(info.value)
    assert seen == []
    with QueueClient("http://127.0.0.1:9") as local:  # fal's variables are read for fal's hosts only
        assert not local.has_key


def test_fals_key_pair_is_stripped_and_joined(monkeypatch) -> None:
    monkeypatch.setenv("FAL_KEY_ID", " id-1\n")
    monkeypatch.setenv("FAL_KEY_SECRET", "secret-2\r\n")
    seen: list[httpx.Request] = []
    client = fluxnb.connect(transport=_fal_recorder(seen), quiet=True)
    assert client.base_url == DEFAULT_BASE_URL
    _submit(client)
    assert seen[0].headers["authorization"] == "Key id-1:secret-2"


@pytest.mark.parametrize("how", ["it is FLUXNB_KEY's value", "it has no ':'"])
def test_a_key_for_a_fluxnb_server_is_not_sent_to_fal(monkeypatch, how) -> None:
    if how == "it has no ':'":
        key = "class-" + os.urandom(4).hex()  # fal's keys are always '<key_id>:<key_secret>'
    else:
        key = "class:" + os.urandom(4).hex()
        monkeypatch.setenv("FLUXNB_KEY", key + "\n")
    seen: list[httpx.Request] = []
    with pytest.raises(CredentialsError) as info:
        fluxnb.connect(key=key, transport=_fal_recorder(seen), quiet=True)
    text = str(info.value)
    assert "key=" in text and "base_url" in text and "FLUXNB_BASE_URL" in text and "fal.ai" in text
    assert key not in text and key not in repr(info.value)
    assert seen == []


def test_an_explicit_fal_key_without_base_url_goes_to_fal(monkeypatch) -> None:
    monkeypatch.setenv("FLUXNB_KEY", "class-secret")  # another key, for a fluxnb server
    seen: list[httpx.Request] = []
    client = fluxnb.connect(key=" my-id:my-secret\n", transport=_fal_recorder(seen), quiet=True)
    assert client.base_url == DEFAULT_BASE_URL
    _submit(client)
    assert seen[0].headers["authorization"] == "Key my-id:my-secret"


def test_fluxnb_key_without_a_server_url_is_an_error(monkeypatch, fal_key_env: str) -> None:
    secret = "class-" + os.urandom(4).hex()
    monkeypatch.setenv("FLUXNB_KEY", secret)
    seen: list[httpx.Request] = []
    client = fluxnb.connect(transport=_fal_recorder(seen), quiet=True)  # FAL_KEY too: fal.ai ...
    _submit(client)
    assert seen[0].headers["authorization"] == f"Key {fal_key_env}"    # ... with FAL_KEY only
    monkeypatch.delenv("FAL_KEY")
    with pytest.raises(CredentialsError) as info:  # not silently the embedded preview server
        fluxnb.connect(quiet=True)
    text = str(info.value)
    assert "FLUXNB_KEY" in text and "FLUXNB_BASE_URL" in text and "base_url" in text
    assert secret not in text and secret not in repr(info.value)
