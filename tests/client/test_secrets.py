"""The key never leaks: not in reprs, exception messages, logs or saved files."""

from __future__ import annotations

import logging
import os
import pickle
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxnb.client import AsyncQueueClient, QueueClient
from fluxnb.errors import (
    CredentialsError,
    FluxnbError,
    JobFailedError,
    JobTimeoutError,
    QueueHTTPError,
    TransportError,
    ValidationError,
)
from fluxnb.protocol import DEFAULT_BASE_URL

from ..twins import call, close

pytestmark = pytest.mark.anyio

KEY = "fluxnb-test-key:" + os.urandom(6).hex()




@pytest.fixture
def keyed_server(server_factory: Any) -> Any:
    return server_factory(engine="null", engine_options={"delay": 0.2}, workers=1, key=KEY)


@pytest.fixture
def sends_nothing() -> None:
    """Marks a test whose key is refused before any request (so nothing is logged by the client)."""


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture,
               request: pytest.FixtureRequest) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)  # every logger: fluxnb, httpx, httpcore, uvicorn
    yield caplog
    records = caplog.get_records("call")
    if "sends_nothing" not in request.fixturenames:  # requests were logged at DEBUG ...
        assert any(r.name == "fluxnb.client" for r in records)
    for record in records:  # ... and never the key, by fluxnb, httpx or httpcore
        assert KEY not in record.getMessage() and KEY not in str(record.args)
        assert "Key " + KEY[:8] not in record.getMessage()


def make(flavor: str, base_url: str, **kwargs: Any) -> QueueClient | AsyncQueueClient:
    return (QueueClient if flavor == "sync" else AsyncQueueClient)(base_url, **kwargs)




def assert_clean(err: BaseException) -> None:
    """No trace of the key in the error, its chain, its attributes or its formatted traceback."""
    text = "".join(traceback.format_exception(err))
    assert KEY not in text
    while err is not None:
        assert KEY not in str(err) and KEY not in repr(err)
        assert KEY not in repr(vars(err))
        err = err.__cause__ or err.__context__  # type: ignore[assignment]


async def test_key_is_used_but_never_shown(flavor, keyed_server, image, mask, tmp_path: Path):
    client = make(flavor, keyed_server.base_url, key=KEY)
    assert KEY not in repr(client) and "key=***" in repr(client)
    assert KEY not in str(vars(client))
    result = await call(client.run, prompt="p", image_url=image, mask_url=mask)  # authorised
    job = client.job(result.request_id)
    assert KEY not in repr(job) and KEY not in repr(result) and KEY not in result._repr_html_()
    with pytest.raises(TypeError):
        pickle.dumps(client)
    for obj in (job, result):  # handles and results pickle without the client (or its key)
        data = pickle.dumps(obj)
        assert KEY.encode() not in data and pickle.loads(data) == obj
    paths = result.save(tmp_path)
    await close(client)
    assert paths
    for path in tmp_path.rglob("*"):
        assert KEY.encode() not in path.read_bytes()


async def test_fal_key_not_sent_to_local_server(flavor, keyed_server, image, mask, monkeypatch):
    monkeypatch.setenv("FAL_KEY", KEY)  # the user's fal key is in the environment ...
    client = make(flavor, keyed_server.base_url)
    assert not client.has_key  # ... but a non-fal host never gets it implicitly
    with pytest.raises(QueueHTTPError) as info:
        await call(client.submit, prompt="p", image_url=image, mask_url=mask)
    await close(client)
    assert info.value.status_code == 401
    assert_clean(info.value)


async def test_errors_are_clean(flavor, keyed_server, server_factory, image, mask, monkeypatch):
    # 401: a wrong key is not echoed either
    wrong = make(flavor, keyed_server.base_url, key=KEY + "-wrong")
    with pytest.raises(QueueHTTPError) as unauthorised:
        await call(wrong.submit, prompt="p", image_url=image, mask_url=mask)
    await close(wrong)
    assert unauthorised.value.status_code == 401
    assert_clean(unauthorised.value)

    client = make(flavor, keyed_server.base_url, key=KEY)
    # 422 as a failed job (the input URL cannot be fetched)
    with pytest.raises(JobFailedError) as failed:
        await call(client.run, prompt="p", image_url=keyed_server.base_url + "/nothing-here.png",
                   mask_url=mask)
    assert failed.value.status_code == 422
    assert_clean(failed.value)
    # 422 on submit (the server's own validation)
    import fluxnb.client._inputs

    with monkeypatch.context() as patch:
        patch.setattr(fluxnb.client._inputs, "validate_input", lambda body: dict(body))
        with pytest.raises(ValidationError) as invalid:
            await call(client.submit, prompt="p", image_url=image, mask_url=mask, strength=9)
    assert_clean(invalid.value)
    # local validation
    with pytest.raises(ValidationError) as local:
        await call(client.submit, prompt="p", image_url=image, mask_url=mask, num_images=99)
    assert_clean(local.value)
    # timeout (the job is cancelled with the key)
    with pytest.raises(JobTimeoutError) as timeout:
        await call(client.run, prompt="p", image_url=image, mask_url=mask, num_images=3, timeout=0.2)
    assert timeout.value.cancelled
    assert_clean(timeout.value)
    await close(client)

    # transport failure after retries
    dead = server_factory(engine="null", key=KEY)
    url = dead.base_url
    dead.stop()
    gone = make(flavor, url, key=KEY, max_retries=1)
    gone._sleep = (lambda d: None) if flavor == "sync" else _async_noop
    with pytest.raises(TransportError) as refused:
        await call(gone.status, gone.job("x"))
    await close(gone)
    assert_clean(refused.value)
    assert isinstance(refused.value, FluxnbError)


async def _async_noop(delay: float) -> None:
    return None


# -- keys from files and environments: cleaned, or refused by name -------------------------------


@pytest.mark.parametrize("source", ["key=", "FLUXNB_KEY"])
async def test_a_key_with_surrounding_whitespace_is_stripped(flavor, keyed_server, image, mask,
                                                             monkeypatch, source):
    messy = "\t" + KEY + " \r\n"  # a key file saved with CRLF keeps its \r through "$(cat key.txt)"
    if source == "key=":
        client = make(flavor, keyed_server.base_url, key=messy)
    else:
        monkeypatch.setenv("FLUXNB_KEY", messy)
        client = make(flavor, keyed_server.base_url)
    result = await call(client.run, prompt="p", image_url=image, mask_url=mask)  # authorised
    await close(client)
    assert result.images


#: An unusable key, and the words its error must use for it.
BAD_KEYS = {
    "non-ASCII": ("\u201c" + KEY + "\u201d", "non-ASCII"),  # pasted with typographic quotes
    "control": (KEY[:9] + "\n" + KEY[9:], "control character"),  # two lines glued together
    "blank": (" \r\n\t", "empty"),
}
#: Where a key comes from, the base URL that reads it, and the name its error must say.
SOURCES = {
    "key=": ("http://127.0.0.1:9", "key="),
    "FLUXNB_KEY": ("http://127.0.0.1:9", "FLUXNB_KEY"),
    "FAL_KEY": (DEFAULT_BASE_URL, "FAL_KEY"),
    "FAL_KEY_ID": (DEFAULT_BASE_URL, "FAL_KEY_ID"),
    "FAL_KEY_SECRET": (DEFAULT_BASE_URL, "FAL_KEY_SECRET"),
}


@pytest.mark.parametrize("kind", list(BAD_KEYS))
@pytest.mark.parametrize("source", list(SOURCES))
async def test_an_unusable_key_is_refused_naming_its_source_never_its_value(
        flavor, sends_nothing, monkeypatch, source, kind):
    bad, words = BAD_KEYS[kind]
    base_url, name = SOURCES[source]
    kwargs: dict[str, Any] = {}
    if source == "key=":
        kwargs["key"] = bad
    else:
        monkeypatch.setenv(source, bad)
        if source == "FAL_KEY_ID":
            monkeypatch.setenv("FAL_KEY_SECRET", "a-fine-secret")
        if source == "FAL_KEY_SECRET":
            monkeypatch.setenv("FAL_KEY_ID", "a-fine-id")
    with pytest.raises(CredentialsError) as info:  # when the client is built: nothing is sent
        make(flavor, base_url, **kwargs)
    err = info.value
    assert isinstance(err, FluxnbError) and isinstance(err, ValueError)
    assert name in str(err) and words in str(err)
    if source == "FAL_KEY_ID":
        assert "FAL_KEY_SECRET" not in str(err).split(".")[0]  # it names the one at fault first
    assert_clean(err)
    assert bad not in str(err) and bad not in repr(err)


def test_fluxnb_run_takes_a_key_read_from_a_crlf_file_and_never_prints_it(
        keyed_server, image, mask, monkeypatch, tmp_path: Path, capsys):
    from fluxnb.cli import main

    image.save(tmp_path / "in.png")
    mask.save(tmp_path / "m.png")
    monkeypatch.setenv("FLUXNB_BASE_URL", keyed_server.base_url)
    monkeypatch.setenv("FLUXNB_KEY", KEY + "\r\n")  # export FLUXNB_KEY="$(cat key.txt)"
    code = main(["run", "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "m.png"),
                 "--prompt", "p", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert KEY not in printed.out + printed.err
    for path in (tmp_path / "out").rglob("*"):
        assert KEY.encode() not in path.read_bytes()
