"""The client package's seams: its layer, typed errors, the logs a plain ``run`` streams, and
downloads that fail with fluxnb errors."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from typing import Any

import httpx
import pytest

import fluxnb
from fluxnb.client import InpaintResult
from fluxnb.errors import FluxnbError, QueueHTTPError, SweepTooLargeError, TransportError, ValidationError

from ..twins import call, close
from .test_client_mock import RID, STATUS, STREAM, Fake, envelope, make

pytestmark = pytest.mark.anyio

#: A loopback port nothing listens on (connection refused at once).
_DEAD = "http://127.0.0.1:9/x.png"


def test_the_client_never_imports_the_notebook_surface_or_the_server() -> None:
    code = ("import sys, fluxnb.client, fluxnb.connect, fluxnb._http, fluxnb.result, fluxnb.sse; "
            "print(sorted(m for m in sys.modules if m.startswith('fluxnb.')))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout.replace("'", '"'))
    above = ("fluxnb.masks", "fluxnb.display", "fluxnb.figures", "fluxnb.widgets", "fluxnb.sweeps",
             "fluxnb.server")
    assert [m for m in loaded if m.startswith(above)] == []


def test_the_connect_module_does_not_hide_the_connect_function() -> None:
    import fluxnb.backends
    import fluxnb.connect  # noqa: F401 - the submodule of the same name

    assert callable(fluxnb.connect) and fluxnb.connect.__name__ == "connect"
    assert fluxnb.backends.connect is fluxnb.connect


def test_error_fields_are_declared() -> None:
    local = ValidationError([{"loc": ["body", "strength"], "msg": "too big", "type": "x"}])
    assert (local.status_code, local.detail, local.request_id, local.error_type) == (None, None, None, None)
    from fluxnb.client._responses import error_for_response

    detail = [{"loc": ["body", "strength"], "msg": "too big", "type": "x"}]
    answer = httpx.Response(422, json={"detail": detail}, headers={"x-fal-request-id": "r9"})
    remote = error_for_response(answer)
    assert isinstance(remote, ValidationError)
    assert (remote.status_code, remote.detail, remote.request_id) == (422, detail, "r9")
    import fluxnb.sweeps

    assert fluxnb.sweeps.SweepTooLargeError is SweepTooLargeError
    assert issubclass(SweepTooLargeError, FluxnbError)


def test_downloads_without_a_client_raise_fluxnb_errors() -> None:
    result = InpaintResult({"images": [{"url": _DEAD}]})
    with pytest.raises(TransportError):
        result.image_bytes()
    with pytest.raises(FluxnbError):
        fluxnb.load_image(_DEAD)


def test_an_error_status_on_a_download_is_a_queue_http_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_found(url: str, **kwargs: Any) -> httpx.Response:
        return httpx.Response(404, text="gone", request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", not_found)
    with pytest.raises(QueueHTTPError) as info:
        InpaintResult({"images": [{"url": "https://cdn.test/a.png?token=s"}]}).image_bytes()
    assert info.value.status_code == 404
    with pytest.raises(QueueHTTPError) as loaded:
        fluxnb.load_image("https://cdn.test/a.png?token=s")
    assert "token" not in str(loaded.value)


def _logged_job(fake: Fake) -> None:
    logs = [{"message": "step 1/1", "level": "INFO", "source": "user", "timestamp": "t"}]
    fake.set("GET", STREAM, httpx.Response(200, headers={"content-type": "text/event-stream"},
             content="".join(f"data: {json.dumps(e)}\n\n" for e in (
                 envelope("IN_PROGRESS", logs=None), envelope("COMPLETED", logs=None, metrics={})))))
    fake.set("GET", STATUS, httpx.Response(200, json=envelope("COMPLETED", logs=logs, metrics={})))


async def test_a_plain_wait_streams_no_log_lines_and_asks_for_them_once(flavor: str) -> None:
    fake = Fake()
    _logged_job(fake)
    client = make(flavor, fake)
    result = await call(client.wait, client.job(RID))
    assert fake.requests[0].url.params["logs"] == "0"    # state changes only
    assert fake.count("GET", STATUS) == 0
    assert [e.message for e in result.logs or []] == ["step 1/1"]   # asked on first access ...
    assert [e.message for e in result.logs or []] == ["step 1/1"]
    assert fake.count("GET", STATUS) == 1                          # ... once
    assert [e.message for e in pickle.loads(pickle.dumps(result)).logs] == ["step 1/1"]
    await close(client)


async def test_logs_false_asks_for_none_and_on_update_streams_them(flavor: str) -> None:
    fake = Fake()
    _logged_job(fake)
    client = make(flavor, fake)
    quiet = await call(client.wait, client.job(RID), logs=False)
    assert quiet.logs is None and fake.count("GET", STATUS) == 0
    seen: list[Any] = []
    await call(client.wait, client.job(RID), on_update=seen.append)
    assert fake.requests[-2].url.params["logs"] == "1" and seen
    await close(client)
