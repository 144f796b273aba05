"""The clients against ``httpx.MockTransport``: retries, backoff, error mapping, headers, uploads.

Every test runs the sync and the async client (``flavor``); sleeps are recorded, never slept.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
from typing import Any

import httpx
import pytest

from fluxnb import __version__
from fluxnb.client import AsyncJob, AsyncQueueClient, Job, QueueClient
from fluxnb.errors import (
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    QueueHTTPError,
    TransportError,
    ValidationError,
)
from fluxnb.protocol import Completed, InProgress, Queued

from ..twins import call, close, collect

BASE = "http://queue.test"
RID = "req-123"
RESP = f"{BASE}/fal-ai/flux-lora/requests/{RID}"
INPUT = {"prompt": "a cat", "image_url": "https://img.test/i.png", "mask_url": "https://img.test/m.png"}
OUTPUT = {"images": [{"url": "data:image/png;base64,iVBORw0KGgo=", "width": 8, "height": 8,
                      "content_type": "image/png"}], "timings": {"inference": 0.1}, "seed": 42,
          "has_nsfw_concepts": [False], "prompt": "a cat"}




def envelope(status: str = "IN_QUEUE", **extra: Any) -> dict[str, Any]:
    return {"status": status, "request_id": RID, "response_url": RESP, "status_url": RESP + "/status",
            "cancel_url": RESP + "/cancel", **extra}


class Fake:
    """A scripted queue: ``routes[(method, path)]`` is a list of responses (or exceptions, or
    callables) served in order; the last one repeats. Every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], list[Any]] = {
            ("POST", "/fal-ai/flux-lora/inpainting"): [httpx.Response(200, json=envelope(queue_position=0))],
            ("GET", f"/fal-ai/flux-lora/requests/{RID}/status"): [
                httpx.Response(200, json=envelope("COMPLETED", logs=None, metrics={}))],
            ("GET", f"/fal-ai/flux-lora/requests/{RID}/status/stream"): [
                httpx.Response(405, json={"detail": "Method Not Allowed"})],
            ("GET", f"/fal-ai/flux-lora/requests/{RID}"): [httpx.Response(200, json=OUTPUT)],
            ("PUT", f"/fal-ai/flux-lora/requests/{RID}/cancel"): [
                httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"})],
        }

    def set(self, method: str, path: str, *answers: Any) -> None:
        self.routes[(method, path)] = list(answers)

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return sum(1 for r in self.requests
                   if (method is None or r.method == method) and (path is None or r.url.path == path))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if answers is None:
            return httpx.Response(404, json={"detail": "Request not found"})
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if callable(answer) and not isinstance(answer, httpx.Response):
            answer = answer(request)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer.stream, httpx.ByteStream):  # a fresh copy each time it is served
            return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)
        return answer


SUBMIT = "/fal-ai/flux-lora/inpainting"
STATUS = f"/fal-ai/flux-lora/requests/{RID}/status"
STREAM = STATUS + "/stream"
RESULT = f"/fal-ai/flux-lora/requests/{RID}"
CANCEL = RESULT + "/cancel"


def make(flavor: str, fake: Fake, base_url: str = BASE, **kwargs: Any) -> QueueClient | AsyncQueueClient:
    cls = QueueClient if flavor == "sync" else AsyncQueueClient
    client = cls(base_url, transport=httpx.MockTransport(fake), **kwargs)
    client.sleeps = []  # type: ignore[union-attr]

    if flavor == "sync":
        client._sleep = client.sleeps.append  # type: ignore[union-attr]
    else:
        async def record(delay: float) -> None:
            client.sleeps.append(delay)  # type: ignore[union-attr]
        client._sleep = record
    return client


pytestmark = pytest.mark.anyio


# -- headers and keys ------------------------------------------------------------------------


async def test_headers_sent(flavor):
    fake = Fake()
    client = make(flavor, fake, key="k-123")
    job = await call(client.submit, INPUT)
    await call(client.status, job)
    await close(client)
    for request in fake.requests:
        assert request.headers["authorization"] == "Key k-123"
        assert request.headers["user-agent"] == f"fluxnb/{__version__}"
    assert fake.requests[0].headers["content-type"] == "application/json"
    assert json.loads(fake.requests[0].content) == INPUT


async def test_no_auth_without_key(flavor, fal_key_env):
    fake = Fake()
    client = make(flavor, fake)  # a non-fal host never gets FAL_KEY implicitly
    assert not client.has_key
    await call(client.submit, INPUT)
    await close(client)
    assert "authorization" not in fake.requests[0].headers


async def test_fluxnb_key_for_other_hosts(flavor, monkeypatch):
    monkeypatch.setenv("FLUXNB_KEY", "local-key")
    fake = Fake()
    client = make(flavor, fake)
    await call(client.submit, INPUT)
    await close(client)
    assert fake.requests[0].headers["authorization"] == "Key local-key"


async def test_fal_key_for_fal_hosts(flavor, fal_key_env, monkeypatch):
    fake = Fake()
    fake.set("POST", SUBMIT, httpx.Response(200, json={"request_id": RID}))
    client = make(flavor, fake, "https://queue.fal.run")
    await call(client.submit, INPUT)
    assert fake.requests[0].headers["authorization"] == f"Key {fal_key_env}"
    await close(client)
    monkeypatch.delenv("FAL_KEY")
    monkeypatch.setenv("FAL_KEY_ID", "id")
    monkeypatch.setenv("FAL_KEY_SECRET", "secret")
    client = make(flavor, fake, "https://queue.fal.run")
    await call(client.submit, INPUT)
    await close(client)
    assert fake.requests[1].headers["authorization"] == "Key id:secret"


async def test_result_images_downloaded_without_key(flavor, image):
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    fake = Fake()
    fake.set("GET", RESULT, httpx.Response(200, json={**OUTPUT, "images": [
        {"url": "http://cdn.test/out.png", "width": 96, "height": 64, "content_type": "image/png"},
        {"url": f"{BASE}/files/own.png", "width": 96, "height": 64, "content_type": "image/png"}]}))
    fake.routes[("GET", "/out.png")] = [httpx.Response(200, content=buf.getvalue())]
    fake.routes[("GET", "/files/own.png")] = [httpx.Response(200, content=buf.getvalue())]
    client = make(flavor, fake, key="k-123")
    result = await call(client.result, client.job(RID))
    images = await call(result.apil_images if flavor == "async" else result.pil_images)
    again = await call(result.apil_images if flavor == "async" else result.pil_images)
    await close(client)
    assert [i.size for i in images] == [(96, 64), (96, 64)] and again == images
    downloads = [r for r in fake.requests if r.url.path in ("/out.png", "/files/own.png")]
    assert len(downloads) == 2  # cached: downloaded once
    assert "authorization" not in downloads[0].headers  # the key never goes to another host
    assert downloads[1].headers["authorization"] == "Key k-123"  # ... but does to the queue's own


async def test_submit_options(flavor):
    fake = Fake()
    client = make(flavor, fake)
    await call(client.submit, INPUT, webhook_url="https://hook.test/x?a=1", priority="low",
               hint="lora:abc", start_timeout=30, headers={"X-Fal-No-Retry": "1"}, seed=7)
    await close(client)
    request = fake.requests[0]
    assert request.url.params["fal_webhook"] == "https://hook.test/x?a=1"
    assert request.headers["x-fal-queue-priority"] == "low"
    assert request.headers["x-fal-runner-hint"] == "lora:abc"
    assert request.headers["x-fal-request-timeout"] == "30.0"
    assert request.headers["x-fal-no-retry"] == "1"
    assert json.loads(request.content)["seed"] == 7


@pytest.mark.parametrize("kwargs, words", [
    ({"priority": "urgent"}, "priority='urgent'"),
    ({"start_timeout": 0}, "start_timeout=0"),
    ({"strength": 2.0}, "strength=2"),
    ({"image_url": "/no/such/file.png"}, "/no/such/file.png"),
    ({"num_inference_stepz": 3}, "did you mean 'num_inference_steps'"),
])
async def test_bad_input_fails_before_any_request(flavor, kwargs, words):
    fake = Fake()
    client = make(flavor, fake)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        await call(client.submit, {**INPUT, **{k: v for k, v in kwargs.items()
                                               if k not in ("priority", "start_timeout")}},
                   **{k: v for k, v in kwargs.items() if k in ("priority", "start_timeout")})
    await close(client)
    assert words in str(info.value)
    assert fake.requests == []


async def test_validation_error_type(flavor):
    fake = Fake()
    client = make(flavor, fake)
    with pytest.raises(ValidationError) as info:
        await call(client.run, prompt="p", image_url=INPUT["image_url"], mask_url=INPUT["mask_url"],
                   num_images=9)
    await close(client)
    assert info.value.fields == ["num_images"] and fake.requests == []


async def test_short_names_are_sent_as_schema_fields(flavor):
    fake = Fake()
    client = make(flavor, fake)
    await call(client.submit, {"prompt": "p", "image": INPUT["image_url"]}, mask=INPUT["mask_url"],
               steps=20, guidance=4.0, images=2)
    await close(client)
    body = json.loads(fake.requests[0].content)
    assert body == {"prompt": "p", "image_url": INPUT["image_url"], "mask_url": INPUT["mask_url"],
                    "num_inference_steps": 20, "guidance_scale": 4.0, "num_images": 2}


async def test_a_short_name_and_its_full_name_together_are_an_error(flavor):
    fake = Fake()
    client = make(flavor, fake)
    with pytest.raises(ValidationError, match=r"num_inference_steps=28 and steps=20 both set "
                                              r"num_inference_steps .*pass only one") as info:
        await call(client.run, {**INPUT, "num_inference_steps": 28, "steps": 20})
    await close(client)
    assert info.value.fields == ["num_inference_steps"] and fake.requests == []


@pytest.mark.parametrize("prompt", ["", "   ", "\n"])
async def test_a_blank_prompt_is_refused_before_sending(flavor, prompt):
    fake = Fake()
    client = make(flavor, fake)
    with pytest.raises(ValidationError, match="prompt is empty") as info:
        await call(client.run, {**INPUT, "prompt": prompt})
    await close(client)
    assert info.value.fields == ["prompt"] and fake.requests == []


# -- the cost warning on fal.ai (MockTransport: a fal-looking URL, and nothing may leave) ------

FAL = "https://queue.fal.run"


def _big_jpeg(color: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (6000, 4000), color).save(buf, "JPEG")  # 24 MP, ~0.4 MB
    return buf.getvalue()


@functools.cache
def _big_inputs() -> dict[str, Any]:
    return {**INPUT, "image_url": _big_jpeg((90, 120, 150)), "mask_url": _big_jpeg((255, 255, 255))}


async def test_fal_warns_once_with_the_cost_of_a_large_job_before_sending(flavor):
    from fluxnb import CostWarning

    fake = Fake()
    client = make(flavor, fake, base_url=FAL, key="id:secret")
    seen_at_submit: list[int] = []
    fake.set("POST", SUBMIT, lambda request: (seen_at_submit.append(len(record)),
                                              httpx.Response(200, json=envelope(queue_position=0)))[1])
    big = _big_inputs()
    with pytest.warns(CostWarning) as record:
        await call(client.run, big, num_images=4)
        await call(client.submit, big, num_images=4)           # once per client: no second warning
    await close(client)
    assert len(record) == 1 and seen_at_submit == [1, 1]     # computed before the first request
    text = str(record[0].message)
    assert "$3.36" in text and "6000x4000" in text and "4 images" in text and "$0.035/MP" in text
    assert "secret" not in text


async def test_fal_warns_for_a_large_image_size_on_a_url_input(flavor):
    from fluxnb import CostWarning

    fake = Fake()
    client = make(flavor, fake, base_url=FAL, key="id:secret")
    with pytest.warns(CostWarning, match=r"\$1\.68"):
        await call(client.submit, INPUT, image_size={"width": 6000, "height": 4000}, num_images=2)
    await close(client)


@pytest.mark.parametrize("base_url", [BASE, FAL])
async def test_no_cost_warning_for_a_free_server_or_a_cheap_job(flavor, base_url):
    import warnings

    fake = Fake()
    client = make(flavor, fake, base_url=base_url, key="id:secret")
    big = _big_inputs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if base_url == BASE:
            await call(client.submit, big, num_images=4)          # a local server is free
        await call(client.submit, INPUT, image_size="square_hd", num_images=4)  # ~$0.15 on fal
        await call(client.submit, INPUT)                      # an http(s) image of unknown size
    await close(client)
    assert [str(w.message) for w in caught] == []


# -- retries ---------------------------------------------------------------------------------


async def test_retry_503_then_success(flavor):
    fake = Fake()
    fake.set("GET", STATUS, httpx.Response(503, json={"detail": "busy"}),
             httpx.Response(503, text="busy"), httpx.Response(202, json=envelope(queue_position=2)))
    client = make(flavor, fake)
    status = await call(client.status, client.job(RID))
    await close(client)
    assert status == Queued(position=2)
    assert fake.count("GET", STATUS) == 3
    assert len(client.sleeps) == 2
    assert 0.125 <= client.sleeps[0] <= 0.375 and 0.25 <= client.sleeps[1] <= 0.75


async def test_retry_after_honoured(flavor):
    fake = Fake()
    fake.set("GET", STATUS, httpx.Response(429, headers={"Retry-After": "7"}, json={"detail": "slow"}),
             httpx.Response(202, json=envelope(queue_position=0)))
    client = make(flavor, fake)
    await call(client.status, client.job(RID))
    await close(client)
    assert client.sleeps == [7.0]


async def test_retries_run_out(flavor):
    fake = Fake()
    fake.set("GET", STATUS, httpx.Response(503, json={"detail": "no runners",
                                                      "error_type": "runner_scheduling_failure"}))
    client = make(flavor, fake, max_retries=3)
    with pytest.raises(QueueHTTPError) as info:
        await call(client.status, client.job(RID))
    await close(client)
    assert fake.count() == 4 and len(client.sleeps) == 3
    for attempt, delay in enumerate(client.sleeps, 1):  # exponential with jitter x0.5-1.5
        assert 0.5 * 0.25 * 2 ** (attempt - 1) <= delay <= 1.5 * 0.25 * 2 ** (attempt - 1)
    err = info.value
    assert (err.status_code, err.detail, err.error_type, err.request_id) == \
        (503, "no runners", "runner_scheduling_failure", RID)


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422, 500])
async def test_no_retry_on_other_errors(flavor, code):
    fake = Fake()
    fake.set("GET", STATUS, httpx.Response(code, json={"detail": "nope"}))
    client = make(flavor, fake)
    with pytest.raises(QueueHTTPError) as info:
        await call(client.status, client.job(RID))
    await close(client)
    assert fake.count() == 1 and client.sleeps == []
    assert info.value.status_code == code


async def test_no_retry_on_user_start_timeout(flavor):
    fake = Fake()
    fake.set("POST", SUBMIT, httpx.Response(
        504, headers={"X-Fal-Request-Timeout-Type": "user", "X-Fal-Error-Type": "request_timeout"},
        json={"detail": "Request timed out"}))
    client = make(flavor, fake)
    with pytest.raises(QueueHTTPError) as info:
        await call(client.submit, INPUT)
    await close(client)
    assert fake.count() == 1 and info.value.error_type == "request_timeout"


async def test_submit_not_retried_after_read_error(flavor):
    fake = Fake()
    fake.set("POST", SUBMIT, httpx.ReadError("connection reset"))
    client = make(flavor, fake)
    with pytest.raises(TransportError) as info:
        await call(client.submit, INPUT)
    await close(client)
    assert fake.count() == 1 and client.sleeps == []
    assert isinstance(info.value.__cause__, httpx.ReadError)
    assert info.value.attempts == 1


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"),
                                 httpx.PoolTimeout("full")])
async def test_submit_retried_when_never_sent(flavor, exc):
    fake = Fake()
    fake.set("POST", SUBMIT, exc, httpx.Response(200, json=envelope(queue_position=0)))
    client = make(flavor, fake)
    job = await call(client.submit, INPUT)
    await close(client)
    assert job.request_id == RID and fake.count() == 2 and len(client.sleeps) == 1


@pytest.mark.parametrize("exc", [httpx.ReadError("reset"), httpx.ReadTimeout("slow"),
                                 httpx.RemoteProtocolError("eof")])
async def test_get_retried_on_any_transport_error(flavor, exc):
    fake = Fake()
    fake.set("GET", RESULT, exc, exc, httpx.Response(200, json=OUTPUT))
    client = make(flavor, fake)
    result = await call(client.result, client.job(RID))
    await close(client)
    assert result.seed == 42 and fake.count() == 3 and len(client.sleeps) == 2


async def test_transport_retries_run_out(flavor):
    fake = Fake()
    fake.set("PUT", CANCEL, httpx.ConnectError("refused"))
    client = make(flavor, fake, max_retries=2)
    with pytest.raises(TransportError) as info:
        await call(client.cancel, client.job(RID))
    await close(client)
    assert fake.count() == 3
    assert info.value.attempts == 3 and "ConnectError" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


# -- odd replies -----------------------------------------------------------------------------


async def test_html_502(flavor):
    fake = Fake()
    fake.set("GET", STATUS,
             httpx.Response(502, html="<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"))
    client = make(flavor, fake, max_retries=1)
    with pytest.raises(QueueHTTPError) as info:
        await call(client.status, client.job(RID))
    await close(client)
    assert info.value.status_code == 502 and "502 Bad Gateway" in str(info.value.detail)
    assert fake.count() == 2


async def test_non_json_error_and_header_error_type(flavor):
    fake = Fake()
    fake.set("POST", SUBMIT, httpx.Response(400, text="plain failure",
                                            headers={"X-Fal-Error-Type": "bad_thing"}))
    client = make(flavor, fake)
    with pytest.raises(QueueHTTPError) as info:
        await call(client.submit, INPUT)
    await close(client)
    assert info.value.detail == "plain failure" and info.value.error_type == "bad_thing"


async def test_non_json_success(flavor):
    fake = Fake()
    fake.set("GET", STATUS, httpx.Response(200, text="OK!"))
    client = make(flavor, fake)
    with pytest.raises(QueueHTTPError, match="expected a JSON body"):
        await call(client.status, client.job(RID))
    await close(client)


async def test_unknown_status_value(flavor):
    fake = Fake()
    fake.set("GET", STATUS, httpx.Response(200, json={"status": "FAILED"}))
    client = make(flavor, fake)
    with pytest.raises(QueueHTTPError, match="unknown job status 'FAILED'"):
        await call(client.status, client.job(RID))
    await close(client)


async def test_submit_missing_fields(flavor):
    fake = Fake()
    fake.set("POST", SUBMIT, httpx.Response(200, json={"status": "IN_QUEUE"}))
    client = make(flavor, fake)
    with pytest.raises(QueueHTTPError, match="no request_id"):
        await call(client.submit, INPUT)
    fake.set("POST", SUBMIT, httpx.Response(200, json={"request_id": RID}))
    job = await call(client.submit, INPUT)  # URLs left out: built the way fal builds them
    await close(client)
    assert job == client.job(RID)
    assert isinstance(job, Job if flavor == "sync" else AsyncJob)


async def test_submit_keeps_server_urls(flavor):
    fake = Fake()
    other = "http://elsewhere.test/x/requests/abc"
    fake.set("POST", SUBMIT, httpx.Response(200, json={
        "request_id": "abc", "response_url": other, "status_url": other + "/st",
        "cancel_url": other + "/cn"}))
    client = make(flavor, fake)
    job = await call(client.submit, INPUT)
    await close(client)
    assert (job.response_url, job.status_url, job.cancel_url) == (other, other + "/st", other + "/cn")


async def test_submit_422_is_validation_error(flavor):
    fake = Fake()
    detail = [{"loc": ["body", "prompt"], "msg": "prompt is too long", "type": "string_too_long"}]
    fake.set("POST", SUBMIT, httpx.Response(422, json={"detail": detail}))
    client = make(flavor, fake)
    with pytest.raises(ValidationError) as info:
        await call(client.submit, INPUT)
    await close(client)
    assert info.value.fields == ["prompt"] and info.value.status_code == 422


# -- status, result, cancel ------------------------------------------------------------------


async def test_status_logs_param(flavor):
    fake = Fake()
    fake.set("GET", STATUS, httpx.Response(202, json=envelope(
        "IN_PROGRESS", logs=[{"message": "step 1/4", "level": "INFO", "source": "USER", "timestamp": ""}])))
    client = make(flavor, fake)
    job = client.job(RID)
    status = await call(client.status, job, logs=True)
    await call(client.status, job)
    await call(job.status)
    await close(client)
    assert isinstance(status, InProgress) and status.logs[0].message == "step 1/4"
    assert [r.url.params["logs"] for r in fake.requests] == ["1", "0", "0"]


async def test_cancel_outcomes(flavor):
    fake = Fake()
    fake.set("PUT", CANCEL, httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"}),
             httpx.Response(400, json={"status": "ALREADY_COMPLETED"}),
             httpx.Response(404, json={"status": "NOT_FOUND"}))
    client = make(flavor, fake)
    job = client.job(RID)
    assert await call(client.cancel, job) == "CANCELLATION_REQUESTED"
    assert await call(job.cancel) == "ALREADY_COMPLETED"
    with pytest.raises(QueueHTTPError) as info:
        await call(client.cancel, RID)
    await close(client)
    assert info.value.status_code == 404


async def test_result_errors(flavor):
    fake = Fake()
    detail = [{"loc": ["body", "image_url"], "msg": "could not download", "type": "file_download_error"}]
    fake.set("GET", RESULT,
             httpx.Response(422, json={"detail": detail},
                            headers={"X-Fal-Error-Type": "file_download_error"}),
             httpx.Response(400, json={"detail": "Request was cancelled", "error_type": "request_cancelled"}),
             httpx.Response(400, json={"detail": "Request is still in progress"}),
             httpx.Response(404, json={"detail": "Request not found"}))
    client = make(flavor, fake)
    job = client.job(RID)
    with pytest.raises(JobFailedError) as failed:
        await call(client.result, job)
    assert not isinstance(failed.value, JobCancelledError)
    assert (failed.value.request_id, failed.value.status_code, failed.value.error_type) == \
        (RID, 422, "file_download_error")
    assert failed.value.error == detail and "could not download" in str(failed.value)
    with pytest.raises(JobCancelledError) as cancelled:
        await call(client.result, job)
    assert cancelled.value.error_type == "request_cancelled"
    for code in (400, 404):
        with pytest.raises(QueueHTTPError) as info:
            await call(client.result, job)
        assert info.value.status_code == code
    await close(client)


async def test_result_object(flavor):
    fake = Fake()
    client = make(flavor, fake)
    result = await call(client.result, client.job(RID))
    await close(client)
    assert result.request_id == RID and result.raw == OUTPUT
    assert (result.seed, result.prompt, result.timings, result.has_nsfw_concepts) == \
        (42, "a cat", {"inference": 0.1}, [False])
    assert (result.images[0].width, result.images[0].content_type) == (8, "image/png")


# -- following a job -------------------------------------------------------------------------


def sse(*bodies: dict[str, Any]) -> httpx.Response:
    text = ": keep-alive\n\n" + "".join(f"data: {json.dumps(b)}\n\n" for b in bodies)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=text)


def log(message: str) -> dict[str, str]:
    return {"message": message, "level": "INFO", "source": "USER", "timestamp": ""}


async def test_wait_uses_stream(flavor):
    fake = Fake()
    fake.set("GET", STREAM, sse(envelope(queue_position=1), envelope("IN_PROGRESS", logs=[log("step 1/2")]),
                                envelope("IN_PROGRESS", logs=[log("step 1/2"), log("step 2/2")]),
                                envelope("COMPLETED", logs=[log("step 1/2"), log("step 2/2")],
                                         metrics={"inference_time": 1.0})))
    client = make(flavor, fake)
    seen: list[Any] = []
    result = await call(client.wait, client.job(RID), on_update=seen.append)
    await close(client)
    assert [type(s) for s in seen] == [Queued, InProgress, InProgress, Completed]
    assert [e.message for e in result.logs] == ["step 1/2", "step 2/2"]
    assert result.metrics == {"inference_time": 1.0}
    assert fake.count("GET", STATUS) == 0  # completion came from the stream: no polling
    assert fake.requests[0].url.params["logs"] == "1"


async def test_stream_sending_only_new_logs(flavor):
    fake = Fake()
    fake.set("GET", STREAM, sse(envelope("IN_PROGRESS", logs=[log("a")]),
                                envelope("IN_PROGRESS", logs=[log("b")]),
                                envelope("COMPLETED", logs=[], metrics={})))
    client = make(flavor, fake)
    result = await call(client.wait, client.job(RID), logs=True)
    await close(client)
    assert [e.message for e in result.logs] == ["a", "b"]


async def test_stream_falls_back_to_polling(flavor):
    fake = Fake()
    fake.set("GET", STATUS, httpx.Response(202, json=envelope(queue_position=0)),
             httpx.Response(202, json=envelope("IN_PROGRESS", logs=[])),
             httpx.Response(200, json=envelope("COMPLETED", logs=[], metrics={})))
    client = make(flavor, fake, poll_interval=0.5)
    statuses = await collect(client.stream_status(client.job(RID)))
    await close(client)
    assert [type(s) for s in statuses] == [Queued, InProgress, Completed]
    assert fake.count("GET", STREAM) == 1 and fake.count("GET", STATUS) == 3
    assert client.sleeps == [0.5, 0.5]


async def test_stream_closed_early_then_polls(flavor):
    fake = Fake()
    fake.set("GET", STREAM, sse(envelope("IN_PROGRESS", logs=[])))
    client = make(flavor, fake)
    statuses = await collect(client.stream_status(client.job(RID)))
    await close(client)
    assert [type(s) for s in statuses] == [InProgress, Completed]


async def test_wait_timeout_cancels(flavor):
    fake = Fake()
    fake.set("GET", STATUS, httpx.Response(202, json=envelope("IN_PROGRESS", logs=[])))
    client = make(flavor, fake, poll_interval=0.01)
    if flavor == "sync":
        client._sleep = time.sleep
    else:
        import anyio
        client._sleep = anyio.sleep
    with pytest.raises(JobTimeoutError) as info:
        await call(client.wait, client.job(RID), timeout=0.2)
    await close(client)
    assert info.value.request_id == RID and info.value.timeout == 0.2 and info.value.cancelled
    assert isinstance(info.value, TimeoutError)
    assert fake.count("PUT", CANCEL) == 1


async def test_run_calls_on_enqueue_first(flavor):
    fake = Fake()
    fake.set("GET", STREAM, sse(envelope("COMPLETED", logs=None, metrics={})))
    client = make(flavor, fake)
    events: list[Any] = []

    def on_enqueue(job):
        events.append(("enqueue", job.request_id, fake.count()))

    async def on_update(status):  # async callbacks are awaited by the async client
        events.append(("update", type(status).__name__))

    result = await call(client.run, INPUT, on_enqueue=on_enqueue,
                        on_update=on_update if flavor == "async" else events.append)
    await close(client)
    assert events[0] == ("enqueue", RID, 1)  # only the submit had been sent
    assert result.seed == 42


# -- uploads ---------------------------------------------------------------------------------


async def test_upload_to_fal_storage(flavor, image):
    fake = Fake()
    fake.routes[("POST", "/storage/auth/token")] = [httpx.Response(200, json={
        "token": "tok-1", "token_type": "Bearer", "base_url": "https://cdn.test",
        "expires_at": "2999-01-01T00:00:00Z"})]
    uploads: list[httpx.Request] = []

    def upload(request: httpx.Request) -> httpx.Response:
        uploads.append(request)
        return httpx.Response(200, json={"access_url": f"https://cdn.test/files/{len(uploads)}.png"})

    fake.routes[("POST", "/files/upload")] = [upload]
    fake.set("POST", SUBMIT, httpx.Response(200, json={"request_id": RID}))
    client = make(flavor, fake, "https://queue.fal.run", key="k-1", upload_threshold=100,
                  rest_url="https://rest.test", cdn_url="https://cdn-default.test")
    job = await call(client.submit, prompt="p", image_url=image, mask_url="https://x.test/m.png")
    await call(client.submit, prompt="p", image_url=image, mask_url="https://x.test/m.png")
    await close(client)
    assert job.request_id == RID
    token_requests = [r for r in fake.requests if r.url.path == "/storage/auth/token"]
    assert len(token_requests) == 1  # cached until expires_at
    token = token_requests[0]
    assert token.url.params["storage_type"] == "fal-cdn-v3" and json.loads(token.content) == {}
    assert token.headers["authorization"] == "Key k-1"
    assert str(uploads[0].url) == "https://cdn.test/files/upload"
    assert uploads[0].headers["authorization"] == "Bearer tok-1"
    assert uploads[0].headers["content-type"] == "image/png"
    assert uploads[0].headers["x-fal-file-name"] == "image.png"
    assert uploads[0].content.startswith(b"\x89PNG")
    submits = [r for r in fake.requests if r.url.path == SUBMIT]
    assert json.loads(submits[0].content)["image_url"] == "https://cdn.test/files/1.png"
    assert json.loads(submits[1].content)["image_url"] == "https://cdn.test/files/2.png"


async def test_expired_token_refreshed(flavor, image):
    fake = Fake()
    fake.routes[("POST", "/storage/auth/token")] = [httpx.Response(200, json={
        "token": "tok", "token_type": "Bearer", "base_url": "https://cdn.test",
        "expires_at": "2000-01-01T00:00:00Z"})]
    fake.routes[("POST", "/files/upload")] = [httpx.Response(200, json={"access_url": "https://cdn.test/f"})]
    fake.set("POST", SUBMIT, httpx.Response(200, json={"request_id": RID}))
    client = make(flavor, fake, "https://queue.fal.run", key="k", upload_threshold=100)
    for _ in range(2):
        await call(client.submit, prompt="p", image_url=image, mask_url="https://x.test/m.png")
    await close(client)
    assert fake.count("POST", "/storage/auth/token") == 2


async def test_no_upload_off_fal_or_small(flavor, image):
    fake = Fake()
    client = make(flavor, fake, upload_threshold=100)  # not fal: always inline
    await call(client.submit, prompt="p", image_url=image, mask_url=image)
    await close(client)
    body = json.loads(fake.requests[0].content)
    assert body["image_url"].startswith("data:image/png;base64,")
    assert fake.count() == 1


async def test_upload_error_mapped(flavor, image):
    fake = Fake()
    fake.routes[("POST", "/storage/auth/token")] = [httpx.Response(401, json={"detail": "No user found"})]
    client = make(flavor, fake, "https://queue.fal.run", key="k", upload_threshold=100)
    with pytest.raises(QueueHTTPError) as info:
        await call(client.submit, prompt="p", image_url=image, mask_url="https://x.test/m.png")
    await close(client)
    assert info.value.status_code == 401
    assert fake.count("POST", SUBMIT) == 0


# -- logging and repr ------------------------------------------------------------------------


async def test_debug_logging(flavor, caplog):
    caplog.set_level(logging.DEBUG, logger="fluxnb.client")
    fake = Fake()
    fake.set("GET", STATUS, httpx.Response(503, json={}),
             httpx.Response(202, json=envelope(queue_position=0)))
    client = make(flavor, fake, key="secret-key-xyz")
    await call(client.status, client.job(RID))
    await close(client)
    text = caplog.text
    assert f"GET {STATUS} -> 503 (attempt 1)" in text and f"GET {STATUS} -> 202 (attempt 2)" in text
    assert "retrying in" in text
    assert "secret-key-xyz" not in text and "Key " not in text


def test_repr_and_constructor_checks():
    client = QueueClient(BASE, key="zzz-secret")
    assert repr(client) == f"QueueClient(base_url='{BASE}', app='fal-ai/flux-lora/inpainting', key=***)"
    assert "zzz-secret" not in repr(client.job(RID))
    client.close()
    client = QueueClient(BASE)
    assert repr(client).endswith("key=None)")
    client.close()
    for bad in ({"timeout": 0}, {"max_retries": -1}, {"poll_interval": -1}, {"app": "nope"}):
        with pytest.raises(ValueError):
            QueueClient(BASE, **bad)
    with pytest.raises(ValueError, match="base_url"):
        QueueClient("queue.fal.run")


class BrokenStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """An SSE body that sends some bytes and then fails with ``exc``."""

    def __init__(self, first: bytes, exc: Exception, delay: float = 0.0):
        self.first, self.exc, self.delay = first, exc, delay

    def __iter__(self):
        yield self.first
        time.sleep(self.delay)  # stands in for a read that waits out its timeout
        raise self.exc

    async def __aiter__(self):
        yield self.first
        time.sleep(self.delay)
        raise self.exc


@pytest.mark.parametrize("exc", [httpx.ReadError("reset"), httpx.ReadTimeout("silent")])
async def test_broken_stream_falls_back_to_polling(flavor, exc):
    fake = Fake()
    first = f"data: {json.dumps(envelope('IN_PROGRESS', logs=[]))}\n\n".encode()
    fake.set("GET", STREAM, lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=BrokenStream(first, exc)))
    client = make(flavor, fake)
    seen: list[Any] = []
    result = await call(client.wait, client.job(RID), on_update=seen.append)
    await close(client)
    assert [type(s) for s in seen] == [InProgress, Completed] and result.seed == 42
    assert fake.count("GET", STATUS) == 1


async def test_silent_stream_hits_the_deadline(flavor):
    fake = Fake()
    first = b": keep-alive\n\n"
    fake.set("GET", STREAM, lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"},
        stream=BrokenStream(first, httpx.ReadTimeout("silent"), delay=0.05)))
    client = make(flavor, fake)
    with pytest.raises(JobTimeoutError):
        # the deadline (already passed when the read times out) wins over falling back to polling
        await call(client.wait, client.job(RID), timeout=0.01)
    await close(client)
    assert fake.count("PUT", CANCEL) == 1 and fake.count("GET", STATUS) == 0


def test_stream_read_timeout_is_bounded_by_the_deadline():
    client = QueueClient(BASE)
    _, request = client._stream_request(client.job(RID), True, time.monotonic() + 2.0)
    assert 1.5 < request["timeout"].read <= 2.1
    assert client._stream_request(client.job(RID), True, None)[1]["timeout"].read == 40.0
    # with a far deadline a read waits one slice at most; a silent stream is then reopened
    assert client._stream_request(client.job(RID), True, time.monotonic() + 500)[1]["timeout"].read == 2.0
    client.close()


def test_sync_and_async_twins_match():
    def public(cls):
        return {n for n in dir(cls) if not n.startswith("_")}

    assert public(QueueClient) - {"close"} == public(AsyncQueueClient) - {"aclose"}
    for name in ("submit", "status", "stream_status", "result", "cancel", "wait", "run", "job"):
        sync = inspect.signature(getattr(QueueClient, name)).parameters
        asyn = inspect.signature(getattr(AsyncQueueClient, name)).parameters
        assert [(p.name, p.kind, p.default) for p in sync.values()] == \
            [(p.name, p.kind, p.default) for p in asyn.values()], name
    assert inspect.signature(QueueClient) == inspect.signature(AsyncQueueClient)
    assert public(Job) == public(AsyncJob)
    for name in ("submit", "status", "result", "cancel", "wait", "run"):
        assert inspect.iscoroutinefunction(getattr(AsyncQueueClient, name)), name
    assert inspect.isasyncgenfunction(AsyncQueueClient._follow)


@pytest.mark.parametrize("code, body, cancelled", [
    (202, {"status": "CANCELLATION_REQUESTED"}, True),
    (400, {"status": "ALREADY_COMPLETED"}, False),
    (404, {"status": "NOT_FOUND"}, False),
])
async def test_timeout_reports_whether_the_cancel_took(flavor, code, body, cancelled):
    fake = Fake()
    fake.set("GET", STATUS, httpx.Response(202, json=envelope(queue_position=3)))
    fake.set("PUT", CANCEL, httpx.Response(code, json=body))
    client = make(flavor, fake, poll_interval=0.01)
    client._sleep = time.sleep if flavor == "sync" else _anyio_sleep
    with pytest.raises(JobTimeoutError) as info:
        await call(client.wait, RID, timeout=0.05)
    await close(client)
    assert info.value.cancelled is cancelled and info.value.request_id == RID


async def _anyio_sleep(delay: float) -> None:
    import anyio

    await anyio.sleep(delay)


async def test_async_submit_encodes_images_off_the_event_loop(image, monkeypatch):
    import threading

    import fluxnb.client._inputs

    threads: list[threading.Thread] = []
    real = fluxnb.client._inputs.encode_image

    def spy(obj: Any, *, mask: bool = False) -> Any:
        threads.append(threading.current_thread())
        return real(obj, mask=mask)

    monkeypatch.setattr(fluxnb.client._inputs, "encode_image", spy)
    fake = Fake()
    client = make("async", fake)
    await client.submit(prompt="p", image_url=image, mask_url=image)
    await client.aclose()
    assert len(threads) == 2 and threading.main_thread() not in threads
