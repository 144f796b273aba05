"""The clients against the real local server over loopback HTTP, sync and async (``flavor``)."""

from __future__ import annotations

import http.server
import io
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fluxnb.client import AsyncJob, AsyncQueueClient, Job, QueueClient
from fluxnb.datauri import encode_data_uri
from fluxnb.errors import (
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    QueueHTTPError,
    TransportError,
    ValidationError,
)
from fluxnb.protocol import Completed, InProgress, Queued, progress_from_logs

from ..conftest import make_test_image, make_test_mask
from ..support import aeventually
from ..twins import call, close, collect

pytestmark = pytest.mark.anyio

SIZE = (96, 64)




def make(flavor: str, base_url: str, **kwargs: Any) -> QueueClient | AsyncQueueClient:
    cls = QueueClient if flavor == "sync" else AsyncQueueClient
    return cls(base_url, **kwargs)





async def images_of(result: Any, flavor: str) -> list[Image.Image]:
    return await call(result.apil_images if flavor == "async" else result.pil_images)


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def file_server() -> Iterator[str]:
    """A tiny static http server with image.png / mask.png (and a 404 for anything else)."""
    files = {"/image.png": png_bytes(make_test_image()), "/mask.png": png_bytes(make_test_mask())}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            data = files.get(self.path)
            self.send_response(200 if data else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# -- the basic path --------------------------------------------------------------------------


async def test_submit_status_stream_result(flavor, live_server, image, mask):
    client = make(flavor, live_server.base_url)
    job = await call(client.submit, prompt="a fox", image_url=image, mask_url=mask,
                     num_inference_steps=6, seed=5)
    assert isinstance(job, Job if flavor == "sync" else AsyncJob)
    assert job == client.job(job.request_id)  # the server's URLs equal the ones fal would build
    statuses = await collect(client.stream_status(job, logs=True))
    assert isinstance(statuses[-1], Completed) and statuses[-1].ok
    assert all(isinstance(s, (Queued, InProgress, Completed)) for s in statuses)
    quiet = await call(client.status, job, logs=False)
    loud = await call(job.status, logs=True)
    assert isinstance(quiet, Completed) and quiet.logs is None
    assert isinstance(loud, Completed) and loud.logs
    done, total = progress_from_logs(loud.logs)
    assert done == total  # the last step line reports the finished count
    result = await call(client.result, job)
    again = await call(job.result)
    await close(client)
    assert result.raw == again.raw and result.request_id == job.request_id
    assert result.seed == 5 and result.prompt == "a fox"
    assert [(i.width, i.height) for i in result.images] == [SIZE]
    assert result.engine == "preview" and result.notice
    assert [im.size for im in await images_of(result, flavor)] == [SIZE]


async def test_run_with_callbacks(flavor, live_server, image, mask, caplog):
    caplog.set_level(logging.DEBUG, logger="fluxnb.client")
    client = make(flavor, live_server.base_url)
    events: list[Any] = []
    result = await call(client.run, {"prompt": "a fox", "image_url": image}, mask_url=mask,
                        num_images=2, on_enqueue=lambda job: events.append(job),
                        on_update=events.append)
    await close(client)
    assert isinstance(events[0], (Job, AsyncJob)) and events[0].request_id == result.request_id
    assert isinstance(events[-1], Completed)
    assert all(isinstance(e, (Queued, InProgress, Completed)) for e in events[1:])
    assert any("step" in entry.message for entry in result.logs)
    assert [im.size for im in await images_of(result, flavor)] == [SIZE, SIZE]
    assert "(stream)" in caplog.text  # followed over SSE ...
    assert "/status -> " not in caplog.text  # ... with no status polls


async def test_short_names_reach_the_server_as_schema_fields(flavor, live_server, image, mask):
    """``client.run(steps=6, images=2, format="png", image=..., mask=...)``: the schema's aliases."""
    client = make(flavor, live_server.base_url)
    result = await call(client.run, {"prompt": "a fox", "image": image}, mask=mask, steps=6,
                        strength=1.0, images=2, format="png", seed=4)
    await close(client)
    assert progress_from_logs(result.logs) == (6, 6)            # 6 steps at strength 1.0 ran
    assert [(i.width, i.height, i.content_type) for i in result.images] == [(*SIZE, "image/png")] * 2
    assert result.seed == 4


async def test_consecutive_runs_share_one_connection(flavor, live_server, image, mask, caplog):
    """The stream is read to its end after COMPLETED, so the result GET and the next job reuse the
    pooled connection instead of opening (and, on TLS, handshaking) a new one."""
    caplog.set_level(logging.DEBUG, logger="httpcore.connection")
    client = make(flavor, live_server.base_url)
    for seed in (1, 2, 3):
        await call(client.run, prompt="p", image_url=image, mask_url=mask, seed=seed)
    await close(client)
    assert caplog.text.count("connect_tcp.started") == 1


async def test_async_callbacks(live_server, image, mask):
    seen: list[str] = []

    async def on_enqueue(job: AsyncJob) -> None:
        seen.append("enqueue")

    async def on_update(status: Any) -> None:
        seen.append(type(status).__name__)

    async with AsyncQueueClient(live_server.base_url) as client:
        await client.run(prompt="p", image_url=image, mask_url=mask, on_enqueue=on_enqueue,
                         on_update=on_update)
    assert seen[0] == "enqueue" and seen[-1] == "Completed"


def _inputs(kind: str, tmp_path: Path, base: str) -> tuple[Any, Any]:
    image, mask = make_test_image(), make_test_mask()
    if kind == "path":
        image.save(tmp_path / "i.png")
        mask.save(tmp_path / "m.png")
        return tmp_path / "i.png", str(tmp_path / "m.png")
    if kind == "pil":
        return image, mask
    if kind == "numpy":
        return np.asarray(image), np.asarray(mask) > 127
    if kind == "bytes_png":
        return png_bytes(image), png_bytes(mask)
    if kind == "bytes_jpeg":
        return png_bytes(image, "JPEG"), png_bytes(mask.convert("RGB"), "JPEG")
    if kind == "data_uri":
        return (encode_data_uri(png_bytes(image), "image/png"),
                encode_data_uri(png_bytes(mask), "image/png"))
    if kind == "http":
        return f"{base}/image.png", f"{base}/mask.png"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["path", "pil", "numpy", "bytes_png", "bytes_jpeg", "data_uri", "http"])
async def test_input_types(flavor, kind, live_server, file_server, tmp_path):
    image, mask = _inputs(kind, tmp_path, file_server)
    client = make(flavor, live_server.base_url)
    result = await call(client.run, prompt="p", image_url=image, mask_url=mask, output_format="png")
    await close(client)
    assert [im.size for im in await images_of(result, flavor)] == [SIZE]


async def test_server_output_url_as_input(flavor, live_server, image, mask):
    client = make(flavor, live_server.base_url)
    first = await call(client.run, prompt="p", image_url=image, mask_url=mask)
    url = first.images[0].url
    assert url.startswith(live_server.base_url)
    second = await call(client.run, prompt="p", image_url=url, mask_url=mask)
    await close(client)
    assert [im.size for im in await images_of(second, flavor)] == [SIZE]


async def test_repr_html_embeds_images(flavor, live_server, image, mask):
    client = make(flavor, live_server.base_url)
    result = await call(client.run, prompt="a <b>fox</b>", image_url=image, mask_url=mask)
    await close(client)  # display works after the client is closed
    html = result._repr_html_()
    assert '<img src="data:image/jpeg;base64,' in html
    assert "a &lt;b&gt;fox&lt;/b&gt;" in html and str(result.seed) in html
    assert "preview" in html and "Note:" in html
    assert "InpaintResult(request_id=" in repr(result) and "96x64" in repr(result)


async def test_result_pickles(flavor, live_server, image, mask):
    import pickle

    client = make(flavor, live_server.base_url)
    result = await call(client.run, prompt="p", image_url=image, mask_url=mask)
    await close(client)
    restored = pickle.loads(pickle.dumps(result))
    assert restored == result and restored.images == result.images
    assert [im.size for im in restored.pil_images()] == [SIZE]  # downloads again, without the client


async def test_save(flavor, live_server, image, mask, tmp_path):
    client = make(flavor, live_server.base_url)
    result = await call(client.run, prompt="p", image_url=image, mask_url=mask, num_images=2)
    await close(client)
    paths = result.save(tmp_path)
    assert [p.suffix for p in paths] == [".jpg", ".jpg", ".json"]
    with Image.open(paths[0]) as saved:
        assert saved.size == SIZE


# -- failures --------------------------------------------------------------------------------


async def test_failed_input_fetch(flavor, live_server, file_server, mask):
    client = make(flavor, live_server.base_url)
    with pytest.raises(JobFailedError) as info:
        await call(client.run, prompt="p", image_url=f"{file_server}/missing.png", mask_url=mask)
    await close(client)
    err = info.value
    assert not isinstance(err, JobCancelledError)
    assert err.status_code == 422 and err.request_id
    assert isinstance(err.error, list) and err.error[0]["loc"] == ["body", "image_url"]
    assert "image_url" in str(err)


async def test_server_422_on_submit(flavor, live_server, monkeypatch):
    import fluxnb.client._inputs

    # skip the client check
    monkeypatch.setattr(fluxnb.client._inputs, "validate_input", lambda body: dict(body))
    client = make(flavor, live_server.base_url)
    with pytest.raises(ValidationError) as info:
        await call(client.submit, prompt="p", image_url="https://x/i.png", mask_url="https://x/m.png",
                   strength=7)
    await close(client)
    assert info.value.status_code == 422 and "strength" in info.value.fields


async def test_unknown_request(flavor, live_server):
    client = make(flavor, live_server.base_url)
    job = client.job("no-such-request")
    for method in (client.status, client.result, client.cancel):
        with pytest.raises(QueueHTTPError) as info:
            await call(method, job)
        assert info.value.status_code == 404
    await close(client)


async def _until(client: Any, job: Any, kind: type) -> None:
    async def check() -> bool:
        return isinstance(await call(client.status, job), kind)

    await aeventually(check, 10, f"job never reached {kind.__name__}", interval=0.01)


async def test_cancel_queued_and_running(flavor, null_server, image, mask):
    client = make(flavor, null_server.base_url)
    running = await call(client.submit, prompt="p", image_url=image, mask_url=mask, num_images=4)
    queued = await call(client.submit, prompt="p", image_url=image, mask_url=mask, num_images=4)
    await _until(client, running, InProgress)
    with pytest.raises(QueueHTTPError) as early:
        await call(client.result, running)
    assert early.value.status_code == 400 and "in progress" in str(early.value)
    assert isinstance(await call(client.status, queued), Queued)
    assert await call(client.cancel, queued) == "CANCELLATION_REQUESTED"
    assert await call(running.cancel) == "CANCELLATION_REQUESTED"
    for job in (queued, running):
        with pytest.raises(JobCancelledError) as info:
            await call(client.wait, job, timeout=10)
        assert info.value.request_id == job.request_id
        assert info.value.error_type == "request_cancelled"
        with pytest.raises(JobCancelledError):
            await call(client.result, job)
        final = await call(client.status, job)
        assert isinstance(final, Completed) and final.error_type == "request_cancelled"
        assert await call(client.cancel, job) == "ALREADY_COMPLETED"
    await close(client)


async def test_run_timeout_cancels_on_server(flavor, null_server, image, mask):
    client = make(flavor, null_server.base_url)
    enqueued: list[Any] = []
    start = time.monotonic()
    with pytest.raises(JobTimeoutError) as info:
        await call(client.run, prompt="p", image_url=image, mask_url=mask, num_images=4,
                   timeout=0.3, on_enqueue=enqueued.append)
    elapsed = time.monotonic() - start
    err = info.value
    assert err.request_id == enqueued[0].request_id and err.timeout == 0.3 and err.cancelled
    assert elapsed < 0.75  # did not wait for the 0.8 s job
    statuses = await collect(client.stream_status(err.request_id))
    final = statuses[-1]
    assert isinstance(final, Completed) and final.error is not None
    assert final.error_type == "request_cancelled"
    await close(client)


async def test_job_handle_methods(flavor, null_server, image, mask):
    client = make(flavor, null_server.base_url, poll_interval=0.05)
    job = await call(client.submit, prompt="p", image_url=image, mask_url=mask)
    rebuilt = client.job(job.request_id)
    assert rebuilt == job
    seen = await collect(rebuilt.stream())
    assert isinstance(seen[-1], Completed)
    result = await call(rebuilt.wait, timeout=10)
    assert result.request_id == job.request_id
    await close(client)


async def test_polling_fallback_against_server(flavor, null_server, image, mask):
    client = make(flavor, null_server.base_url, poll_interval=0.02)
    client._stream_ok = False  # behave like a server without the SSE stream
    updates: list[Any] = []
    result = await call(client.run, prompt="p", image_url=image, mask_url=mask, on_update=updates.append)
    await close(client)
    assert isinstance(updates[-1], Completed) and len(updates) >= 2
    assert [im.size for im in await images_of(result, flavor)] == [SIZE]


async def test_tls_server_with_a_ca_bundle_path(flavor, server_factory, tmp_path, image, mask):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    server = server_factory(engine="preview", certfile=str(certfile), keyfile=str(keyfile))
    assert server.base_url.startswith("https://")
    client = make(flavor, server.base_url, verify=str(cafile))  # a path, as users pass it
    result = await call(client.run, prompt="p", image_url=image, mask_url=mask)
    assert [im.size for im in await images_of(result, flavor)] == [SIZE]
    await close(client)
    untrusting = make(flavor, server.base_url)  # default retries: a bad certificate is not retried
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed") as info:
        await call(untrusting.status, untrusting.job("x"))
    await close(untrusting)
    assert info.value.attempts == 1


async def test_timeout_is_honoured_between_stream_events(flavor, server_factory, image, mask):
    """A job that starts running mid-wait and then stays silent: the wait still ends at its
    timeout (not when the next event happens to arrive) and the job is cancelled."""
    server = server_factory(engine="null", engine_options={"delay": 1.5}, workers=1,
                            keepalive_interval=30.0)
    client = make(flavor, server.base_url)
    blocker = await call(client.submit, prompt="p", image_url=image, mask_url=mask)
    started = time.monotonic()
    with pytest.raises(JobTimeoutError) as caught:
        await call(client.run, prompt="p", image_url=image, mask_url=mask, timeout=2.2, logs=False)
    waited = time.monotonic() - started
    with pytest.raises(JobCancelledError):  # the cancel lands at the engine's next step
        await call(client.wait, caught.value.request_id)
    final = await call(client.status, caught.value.request_id)
    await call(client.cancel, blocker)
    await close(client)
    assert caught.value.cancelled and isinstance(final, Completed) and final.error
    # without the fix the wait runs until the job completes at ~3.0 s and returns a result
    assert waited < 2.9, waited


def test_clone_keeps_settings_and_key_and_switches_flavour(server_factory, image, mask):
    """``clone(asynchronous=True)`` of a sync client reaches a keyed server with the same key."""
    import asyncio

    server = server_factory(engine="null", key="clone-key")
    with QueueClient(server.base_url, key="clone-key", timeout=12.0, max_retries=2) as client:
        twin = client.clone(asynchronous=True)
        assert isinstance(twin, AsyncQueueClient) and twin.has_key
        assert (twin.base_url, twin.app, twin.timeout, twin.max_retries) == (
            client.base_url, client.app, 12.0, 2)
        assert "clone-key" not in repr(twin)

        async def scenario() -> str:
            async with twin:
                return (await twin.run(prompt="p", image_url=image, mask_url=mask)).request_id

        assert asyncio.run(scenario())
        assert isinstance(client.clone(), QueueClient)
    unkeyed = QueueClient(server.base_url, key="").clone(asynchronous=True)
    assert not unkeyed.has_key
