"""The local server against fal's queue contract (docs/fal-protocol.md section 14), over real HTTP."""

from __future__ import annotations

import base64
import io
import json
import os
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from fluxnb.protocol import Completed, parse_status, progress_from_logs
from fluxnb.server import BackgroundServer
from tests.conftest import make_test_image, make_test_mask
from tests.support import eventually

SUBMIT = "/fal-ai/flux-lora/inpainting"
URL_KEYS = ("request_id", "response_url", "status_url", "cancel_url")


def data_uri(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


IMAGE_URI = data_uri(make_test_image())
MASK_URI = data_uri(make_test_mask())


def body(**extra: Any) -> dict[str, Any]:
    return {"prompt": "a red fox", "image_url": IMAGE_URI, "mask_url": MASK_URI, **extra}


def submit(server: BackgroundServer, headers: dict[str, str] | None = None,
           **extra: Any) -> dict[str, Any]:
    r = httpx.post(server.base_url + SUBMIT, json=body(**extra), headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def status(job: dict[str, Any], logs: str | None = None, **kw: Any) -> httpx.Response:
    params = {} if logs is None else {"logs": logs}
    return httpx.get(job["status_url"], params=params, **kw)


def wait_for(job: dict[str, Any], state: str = "COMPLETED", timeout: float = 15.0,
             **kw: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        seen.update(status(job, **kw).json())
        done = seen["status"] == state or (state == "IN_PROGRESS" and seen["status"] == "COMPLETED")
        return dict(seen) if done else None

    data: dict[str, Any] = eventually(reached, timeout, lambda: f"job never reached {state}: {seen}",
                                      interval=0.01)
    return data


def result(job: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.get(job["response_url"], **kw)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# -- submit ---------------------------------------------------------------------------------


def test_submit_envelope_urls_and_headers(live_server: BackgroundServer) -> None:
    r = httpx.post(live_server.base_url + SUBMIT, json=body(seed=1))
    assert r.status_code == 200
    data = r.json()
    rid = data["request_id"]
    base = f"{live_server.base_url}/fal-ai/flux-lora/requests/{rid}"
    assert data["status"] == "IN_QUEUE"
    assert data["response_url"] == base
    assert data["status_url"] == base + "/status"
    assert data["cancel_url"] == base + "/cancel"
    assert data["logs"] is None and data["metrics"] == {}
    assert isinstance(data["queue_position"], int) and data["queue_position"] >= 0
    assert data["gateway_request_id"]
    assert r.headers["x-fal-request-id"] == rid
    assert r.headers["x-fluxnb-engine"] == "preview"
    wait_for(data)


def test_urls_follow_the_host_header(server_factory: Callable[..., BackgroundServer]) -> None:
    # a keyed server (behind a proxy under any name); the keyless laptop server answers only its
    # own loopback Host (tests/server/test_guard.py)
    server = server_factory(engine="preview", key="k-1")
    auth = {"Authorization": "Key k-1"}
    r = httpx.post(server.base_url + SUBMIT, json=body(seed=2),
                   headers={**auth, "Host": "fal.example.test:8443"})
    data = r.json()
    rid = data["request_id"]
    assert data["response_url"] == f"http://fal.example.test:8443/fal-ai/flux-lora/requests/{rid}"
    # status URLs come from the Host of the *current* request
    st = status(data | {"status_url": f"{server.base_url}/fal-ai/flux-lora/requests/{rid}/status"},
                headers={**auth, "Host": "other.test:9"}).json()
    assert st["status_url"] == f"http://other.test:9/fal-ai/flux-lora/requests/{rid}/status"
    own = {k: v.replace("http://fal.example.test:8443", server.base_url)
           for k, v in data.items() if k.endswith("_url")}
    wait_for(own, headers=auth)
    res = httpx.get(own["response_url"], headers={**auth, "Host": "img.test:7"}).json()
    assert res["images"][0]["url"].startswith("http://img.test:7/_fluxnb/files/")


def test_submit_accepts_fal_headers_and_webhook(live_server: BackgroundServer) -> None:
    headers = {"X-Fal-Runner-Hint": "lora:abc", "X-Fal-Queue-Priority": "low",
               "X-Fal-No-Retry": "1", "X-Fal-Request-Timeout": "30.0",
               "X-Fal-Object-Lifecycle-Preference": '{"expiration_duration_seconds": 60}',
               "Authorization": "Key anything:goes", "User-Agent": "fal-client/1.0.3 (python)"}
    r = httpx.post(live_server.base_url + SUBMIT + "?fal_webhook=https%3A%2F%2Fhook.example%2Fx",
                   json=body(seed=3), headers=headers)
    assert r.status_code == 200, r.text
    assert wait_for(r.json()).get("error") is None


def test_unknown_app_is_404(live_server: BackgroundServer) -> None:
    for path in ("/fal-ai/flux-lora", "/fal-ai/other-app/inpainting", "/x"):
        r = httpx.post(live_server.base_url + path, json=body())
        assert r.status_code == 404
        assert isinstance(r.json()["detail"], str)


def test_unknown_request_and_app_mismatch_are_404(live_server: BackgroundServer) -> None:
    base = live_server.base_url
    for suffix in ("/status", "", "/status/stream"):
        r = httpx.get(f"{base}/fal-ai/flux-lora/requests/no-such-id{suffix}")
        assert r.status_code == 404
        assert r.json() == {"detail": "Request not found"}
    job = submit(live_server, seed=4)
    wrong = job["status_url"].replace("/fal-ai/flux-lora/", "/fal-ai/other/")
    assert httpx.get(wrong).status_code == 404
    assert httpx.get(job["response_url"].replace("fal-ai/", "someone/")).status_code == 404
    r = httpx.put(f"{base}/fal-ai/flux-lora/requests/no-such-id/cancel")
    assert r.status_code == 404 and r.json() == {"status": "NOT_FOUND"}
    wait_for(job)


def test_namespaced_app_ids(server_factory: Callable[..., BackgroundServer]) -> None:
    server = server_factory(engine="null", port=0, app_ids=("workflows/me/my-flow/sub",))
    r = httpx.post(server.base_url + "/workflows/me/my-flow/sub", json=body())
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["response_url"] == f"{server.base_url}/workflows/me/my-flow/requests/{job['request_id']}"
    assert wait_for(job)["status"] == "COMPLETED"
    assert result(job).status_code == 200
    assert httpx.post(server.base_url + SUBMIT, json=body()).status_code == 404


# -- status ---------------------------------------------------------------------------------


def test_status_codes_logs_and_metrics(null_server: BackgroundServer) -> None:
    job = submit(null_server, num_images=2)  # 0.4 s on the 0.2 s/image null engine
    early = status(job)
    assert early.status_code == 202
    data = early.json()
    assert data["status"] in ("IN_QUEUE", "IN_PROGRESS")
    for key in URL_KEYS:
        assert key in data
    if data["status"] == "IN_QUEUE":
        assert isinstance(data["queue_position"], int)
    running = wait_for(job, "IN_PROGRESS")
    if running["status"] == "IN_PROGRESS":
        assert "logs" in running and running["logs"] is None
        assert status(job).status_code == 202
        with_logs = status(job, "1").json()
        assert isinstance(with_logs["logs"], list)
        parse_status(with_logs)
    done = wait_for(job)
    assert status(job).status_code == 200
    assert done["logs"] is None
    assert isinstance(done["metrics"]["inference_time"], float)
    assert "error" not in done
    for key in URL_KEYS:
        assert key in done
    for spelling in ("1", "true", "True"):
        logs = status(job, spelling).json()["logs"]
        assert isinstance(logs, list) and logs
        assert set(logs[0]) == {"message", "level", "source", "timestamp"}
        assert logs[0]["source"] == "USER"
        assert "engine: null" in logs[0]["message"]
        assert "a preview engine, not a generative model" in logs[0]["message"]
    for off in ("0", "false", None):
        assert status(job, off).json()["logs"] is None
    messages = [e["message"] for e in status(job, "true").json()["logs"]]
    assert "image 2/2: step 10/10" in messages
    parsed = parse_status(status(job, "true").json())
    assert isinstance(parsed, Completed) and progress_from_logs(parsed.logs) == (10, 10)


def test_queue_positions_on_one_worker(null_server: BackgroundServer) -> None:
    first = submit(null_server, num_images=4)
    wait_for(first, "IN_PROGRESS")
    queued = [submit(null_server) for _ in range(3)]
    assert [j["queue_position"] for j in queued] == [0, 1, 2]
    positions = [status(j).json() for j in queued]
    assert [p["status"] for p in positions] == ["IN_QUEUE"] * 3
    assert [p["queue_position"] for p in positions] == [0, 1, 2]
    assert status(queued[1]).status_code == 202
    # cancelling the head moves everyone up
    assert httpx.put(queued[0]["cancel_url"]).status_code == 202
    assert [status(j).json()["queue_position"] for j in queued[1:]] == [0, 1]
    for j in (first, *queued[1:]):
        httpx.put(j["cancel_url"])
    for j in (first, *queued):
        wait_for(j)


def test_low_priority_queues_behind_normal(server_factory: Callable[..., BackgroundServer]) -> None:
    server = server_factory(engine="null", engine_options={"delay": 0.1}, workers=1, port=0)
    blocker = submit(server, num_images=2)
    wait_for(blocker, "IN_PROGRESS")
    low = submit(server, headers={"X-Fal-Queue-Priority": "low"})
    normal = submit(server, headers={"X-Fal-Queue-Priority": "normal"})
    assert status(normal).json()["queue_position"] == 0
    assert status(low).json()["queue_position"] == 1
    finished = {name: wait_for(job, logs="1")["logs"][-1]["timestamp"]
                for name, job in (("low", low), ("normal", normal))}
    assert finished["normal"] < finished["low"]  # ISO timestamps of the "done" lines
    bad = httpx.post(server.base_url + SUBMIT, json=body(), headers={"X-Fal-Queue-Priority": "urgent"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["header", "x-fal-queue-priority"]


def test_start_timeout_gives_504(server_factory: Callable[..., BackgroundServer]) -> None:
    server = server_factory(engine="null", engine_options={"delay": 0.6}, workers=1, port=0)
    blocker = submit(server)
    wait_for(blocker, "IN_PROGRESS")
    late = submit(server, headers={"X-Fal-Request-Timeout": "0.2"})
    done = wait_for(late, timeout=5)
    assert done["error_type"] == "request_timeout"
    assert status(blocker).json()["status"] == "IN_PROGRESS"  # expired while the worker was busy
    r = result(late)
    assert r.status_code == 504
    assert r.headers["X-Fal-Request-Timeout-Type"] == "user"
    assert r.headers["x-fal-request-id"] == late["request_id"]
    assert r.json() == {"detail": "Request timed out", "error_type": "request_timeout"}
    assert wait_for(blocker).get("error") is None
    assert server.service.stats["jobs"]["timed_out"] == 1
    # a job that starts in time is not affected by its timeout
    ok = submit(server, headers={"X-Fal-Request-Timeout": "30"})
    assert wait_for(ok).get("error") is None
    assert httpx.post(server.base_url + SUBMIT, json=body(),
                      headers={"X-Fal-Request-Timeout": "soon"}).status_code == 422


# -- stream ---------------------------------------------------------------------------------


def read_events(url: str, params: dict[str, str] | None = None,
                timeout: float = 15.0) -> tuple[list[dict[str, Any]], list[str], httpx.Response]:
    events: list[dict[str, Any]] = []
    comments: list[str] = []
    with httpx.stream("GET", url, params=params, timeout=timeout) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            elif line.startswith(":"):
                comments.append(line)
    return events, comments, r


def test_sse_stream_until_completed(null_server: BackgroundServer) -> None:
    job = submit(null_server, num_images=3)
    events, _, r = read_events(job["status_url"] + "/stream", {"logs": "1"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert events[-1]["status"] == "COMPLETED"
    assert [e["status"] for e in events].count("COMPLETED") == 1
    assert "IN_PROGRESS" in [e["status"] for e in events]
    for e in events:
        for key in URL_KEYS:
            assert key in e
        parse_status(e)
    assert isinstance(events[-1]["logs"], list)
    assert "metrics" in events[-1]
    # logs off: the logs key is there but null
    events, _, _ = read_events(job["status_url"] + "/stream")
    assert len(events) == 1 and events[0]["logs"] is None
    # logs off on a running job: one event per visible change, not one per step
    job = submit(null_server, num_images=2)
    events, _, _ = read_events(job["status_url"] + "/stream", {"logs": "0"})
    assert events[-1]["status"] == "COMPLETED"
    assert len(events) <= 4
    assert all(a != b for a, b in zip(events, events[1:], strict=False))


def test_sse_keepalive_and_many_streams(server_factory: Callable[..., BackgroundServer]) -> None:
    server = server_factory(engine="null", engine_options={"delay": 0.5}, workers=1, port=0,
                            keepalive_interval=0.1)
    submit(server)  # keeps the worker busy: the watched job sits queued with nothing to report
    job = submit(server)
    outcomes: list[tuple[list[dict[str, Any]], list[str]]] = []
    lock = threading.Lock()

    def watch() -> None:
        events, comments, _ = read_events(job["status_url"] + "/stream", {"logs": "true"})
        with lock:
            outcomes.append((events, comments))

    threads = [threading.Thread(target=watch) for _ in range(25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(outcomes) == 25
    for events, _comments in outcomes:
        assert events[-1]["status"] == "COMPLETED"
    assert any(": keep-alive" in c for _, cs in outcomes for c in cs)
    assert server.service.stats["requests"]["stream"] == 25


# -- result -----------------------------------------------------------------------------------


def test_result_before_completion_is_400(null_server: BackgroundServer) -> None:
    job = submit(null_server, num_images=2)
    r = result(job)
    assert r.status_code == 400
    assert r.json() == {"detail": "Request is still in progress"}
    wait_for(job)


def test_result_output_repeatable_and_files_download(live_server: BackgroundServer) -> None:
    job = submit(live_server, seed=7, num_images=2, output_format="png")
    wait_for(job)
    first, second = result(job), result(job)
    assert first.status_code == 200 and first.headers["x-fal-request-id"] == job["request_id"]
    out = first.json()
    assert out == second.json()
    assert out["seed"] == 7 and out["prompt"] == "a red fox"
    assert out["has_nsfw_concepts"] == [False, False]
    assert isinstance(out["timings"]["inference"], float)
    assert out["engine"] == "preview" and "not a generative model" in out["notice"]
    for img in out["images"]:
        assert img["content_type"] == "image/png"
        got = httpx.get(img["url"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert len(got.content) == img["file_size"]
        pic = Image.open(io.BytesIO(got.content))
        assert pic.size == (img["width"], img["height"]) == (96, 64)
        assert img["file_name"] in img["url"]
    token_url = out["images"][0]["url"]
    assert httpx.get(token_url.rsplit("/", 2)[0] + "/bogus/x.png").status_code == 404


def test_jpeg_default_random_seed_and_sync_mode(live_server: BackgroundServer) -> None:
    job = submit(live_server)
    wait_for(job)
    out = result(job).json()
    assert 0 <= out["seed"] < 2**32
    assert out["images"][0]["content_type"] == "image/jpeg"
    assert httpx.get(out["images"][0]["url"]).content[:3] == b"\xff\xd8\xff"
    job = submit(live_server, sync_mode=True, seed=5, output_format="png")
    wait_for(job)
    img = result(job).json()["images"][0]
    assert img["url"].startswith("data:image/png;base64,")
    pic = Image.open(io.BytesIO(base64.b64decode(img["url"].split(",", 1)[1])))
    assert pic.size == (96, 64)


def test_image_size_and_mask_resizing(live_server: BackgroundServer) -> None:
    small_mask = data_uri(make_test_mask(48, 32))
    job = submit(live_server, mask_url=small_mask, seed=1)  # mask follows the image size
    wait_for(job)
    assert result(job).json()["images"][0]["width"] == 96
    job = submit(live_server, image_size={"width": 40, "height": 30}, seed=1)
    wait_for(job)
    img = result(job).json()["images"][0]
    assert (img["width"], img["height"]) == (40, 30)


def test_http_inputs_are_fetched(live_server: BackgroundServer) -> None:
    """A result file URL served by the server is a valid http input for the next job."""
    first = submit(live_server, seed=1, output_format="png")
    wait_for(first)
    url = result(first).json()["images"][0]["url"]
    job = submit(live_server, image_url=url, seed=2)
    wait_for(job)
    assert result(job).status_code == 200
    logs = [e["message"] for e in status(job, "1").json()["logs"]]
    assert "downloading image_url" in logs


def test_http_fetch_failure_is_422_file_download_error(live_server: BackgroundServer) -> None:
    for url in ("http://127.0.0.1:1/nothing.png", live_server.base_url + "/_fluxnb/files/x/y.png"):
        job = submit(live_server, image_url=url)
        done = wait_for(job)
        assert done["error_type"] == "file_download_error" and done["error"]
        r = result(job)
        assert r.status_code == 422
        assert r.headers["X-Fal-Error-Type"] == "file_download_error"
        detail = r.json()["detail"]
        assert detail[0]["loc"] == ["body", "image_url"]
        assert detail[0]["type"] == "file_download_error"
        assert result(job).json() == r.json()


# -- masks that repaint nothing or do not fit the image -------------------------------------


def red_on_black(size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Red paint on black: luminance 76 < 128, so it marks nothing to repaint."""
    img = Image.new("RGB", size)
    img.paste((255, 0, 0), (20, 10, 60, 40))
    return img


@pytest.mark.parametrize(("mask", "brightest"), [(Image.new("L", (96, 64)), 0), (red_on_black(), 76)])
def test_an_empty_mask_is_422_naming_mask_url(server_factory: Callable[..., BackgroundServer],
                                              mask: Image.Image, brightest: int) -> None:
    server = server_factory(engine="null")
    r = httpx.post(server.base_url + SUBMIT, json=body(mask_url=data_uri(mask)))
    assert r.status_code == 422, r.text
    [item] = r.json()["detail"]
    assert item["loc"] == ["body", "mask_url"] and item["type"] == "mask_empty"
    assert item["msg"].startswith("mask_url: ")
    assert f"the brightest mask pixel is {brightest}" in item["msg"]
    assert "fluxnb.mask_threshold" in item["msg"]
    assert server.service.stats["jobs"]["submitted"] == 0


def test_a_mask_of_another_aspect_ratio_is_422_naming_both_sizes(
        server_factory: Callable[..., BackgroundServer]) -> None:
    server = server_factory(engine="null")
    r = httpx.post(server.base_url + SUBMIT, json=body(mask_url=data_uri(make_test_mask(64, 96))))
    assert r.status_code == 422, r.text
    [item] = r.json()["detail"]
    assert item["loc"] == ["body", "mask_url"] and item["type"] == "mask_mismatch"
    assert item["msg"].startswith("mask_url: ") and "64x96" in item["msg"] and "96x64" in item["msg"]
    assert server.service.stats["jobs"]["submitted"] == 0


def test_a_mask_of_the_same_aspect_ratio_is_resized_with_a_job_log_line(
        live_server: BackgroundServer) -> None:
    job = submit(live_server, mask_url=data_uri(make_test_mask(48, 32)), seed=1)
    wait_for(job)
    assert result(job).json()["images"][0]["width"] == 96
    logs = [e["message"] for e in status(job, "1").json()["logs"]]
    assert any("48x32" in line and "96x64" in line and "resized" in line for line in logs), logs


def test_downloaded_masks_are_checked_too(server_factory: Callable[..., BackgroundServer]) -> None:
    """http(s) masks are fetched by the worker: an empty or misshapen one fails the job with 422."""
    # the null engine returns its input image: a way to serve any picture (from loopback)
    server = server_factory(engine="null", fetch_allow_loopback=True)
    black = submit(server, image_url=data_uri(Image.new("RGB", (96, 64))), output_format="png")
    tall = submit(server, image_url=data_uri(make_test_image(64, 96)),
                  mask_url=data_uri(make_test_mask(64, 96)), output_format="png")
    urls = {}
    for name, job in (("black", black), ("tall", tall)):
        wait_for(job)
        urls[name] = result(job).json()["images"][0]["url"]
    for name, error_type, words in (("black", "mask_empty", "the brightest mask pixel is 0"),
                                    ("tall", "mask_mismatch", "64x96")):
        job = submit(server, mask_url=urls[name])
        done = wait_for(job)
        assert done["error_type"] == error_type, done
        r = result(job)
        assert r.status_code == 422
        [item] = r.json()["detail"]
        assert item["loc"] == ["body", "mask_url"] and item["type"] == error_type
        assert words in item["msg"]
    assert server.service.stats["jobs"].get("completed") == 2


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_queued_running_and_completed(null_server: BackgroundServer) -> None:
    before = submit(null_server)
    wait_for(before)
    running = submit(null_server, num_images=4)  # 0.8 s
    queued = submit(null_server)
    after = submit(null_server)
    wait_for(running, "IN_PROGRESS")
    r = httpx.put(queued["cancel_url"])
    assert r.status_code == 202 and r.json() == {"status": "CANCELLATION_REQUESTED"}
    done = status(queued).json()
    assert done["status"] == "COMPLETED" and done["error_type"] == "request_cancelled"
    t0 = time.monotonic()
    r = httpx.put(running["cancel_url"])
    assert r.status_code == 202 and r.json() == {"status": "CANCELLATION_REQUESTED"}
    done = wait_for(running)
    assert time.monotonic() - t0 < 0.75  # stopped at a step, not after all 4 images
    messages = [e["message"] for e in status(running, "1").json()["logs"]]
    assert "image 4/4: step 10/10" not in messages and messages[-1] == "cancelled"
    assert done["error_type"] == "request_cancelled" and done["error"]
    for job in (queued, running):
        r = result(job)
        assert r.status_code == 400
        assert r.json() == {"detail": "Request was cancelled", "error_type": "request_cancelled"}
        assert r.headers["X-Fal-Error-Type"] == "request_cancelled"
        again = httpx.put(job["cancel_url"])
        assert again.status_code == 400 and again.json() == {"status": "ALREADY_COMPLETED"}
    # the other jobs are untouched
    assert wait_for(after).get("error") is None
    for job in (before, after):
        out = result(job)
        assert out.status_code == 200
        assert httpx.get(out.json()["images"][0]["url"]).status_code == 200


# -- errors -----------------------------------------------------------------------------------


def test_validation_errors_name_the_field(live_server: BackgroundServer) -> None:
    url = live_server.base_url + SUBMIT
    r = httpx.post(url, json=body(strength=2))
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "strength"]
    r = httpx.post(url, json={"image_url": IMAGE_URI, "mask_url": MASK_URI})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prompt"]
    r = httpx.post(url, json=body(image_url="ftp://x/y.png"))
    assert r.json()["detail"][0]["loc"] == ["body", "image_url"]
    for raw in (b"{", b"[1, 2]", b"", b"\xff\xfe", b'"text"'):
        r = httpx.post(url, content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body"]
        assert r.json()["detail"][0]["type"] == "json_invalid"
    # the keyless laptop server takes only JSON bodies (a keyed server answers 422 here)
    r = httpx.post(url, content=b"prompt=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "detail" in r.json()


@pytest.mark.parametrize(("uri", "error_type"), [
    ("data:image/png;base64,!!!not-base64!!!", "image_decode_error"),
    ("data:image/png;base64," + base64.b64encode(b"hello, not an image").decode(), "image_decode_error"),
    ("data:image/png;base64," + base64.b64encode(png_bytes(make_test_mask())[:60]).decode(),
     "image_decode_error"),
    ("data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff\xe0garbage").decode(), "image_decode_error"),
    ("data:image/png,", "image_decode_error"),
])
def test_bad_data_uri_is_422(live_server: BackgroundServer, uri: str, error_type: str) -> None:
    r = httpx.post(live_server.base_url + SUBMIT, json=body(mask_url=uri))
    assert r.status_code == 422
    item = r.json()["detail"][0]
    assert item["loc"] == ["body", "mask_url"] and item["type"] == error_type


def test_engine_crash_is_500_with_request_id(server_factory: Callable[..., BackgroundServer]) -> None:
    from fluxnb.server.engines import Engine, register_engine

    class Crash(Engine):
        name = "crash-test"

        def run(self, request: Any, ctx: Any) -> Any:
            raise RuntimeError("boom")

    register_engine("crash-test", Crash)
    server = server_factory(engine="crash-test", port=0)
    job = submit(server)
    done = wait_for(job)
    assert done["error_type"] == "internal_error"
    r = result(job)
    assert r.status_code == 500
    assert r.headers["x-fal-request-id"] == job["request_id"]
    assert r.headers["X-Fal-Error-Type"] == "internal_error"
    assert r.json()["error_type"] == "internal_error" and "RuntimeError" in r.json()["detail"]
    assert "boom" not in r.json()["detail"]  # the engine's text stays in the server log
    assert server.service.stats["jobs"]["failed"] == 1


def test_max_results_evicts_oldest_with_files(server_factory: Callable[..., BackgroundServer]) -> None:
    server = server_factory(engine="null", port=0, max_results=2)
    jobs = []
    for _ in range(3):
        jobs.append(submit(server))
        wait_for(jobs[-1])
    file_url = result(jobs[1]).json()["images"][0]["url"]
    assert httpx.get(file_url).status_code == 200
    assert status(jobs[0]).status_code == 404
    assert result(jobs[0]).status_code == 404
    job = submit(server)
    wait_for(job)
    assert status(jobs[1]).status_code == 404
    assert httpx.get(file_url).status_code == 404
    assert server.service.stats["stored"] == 2


def test_stats_and_info(server_factory: Callable[..., BackgroundServer]) -> None:
    server = server_factory(engine="null", port=0)
    job = submit(server)
    wait_for(job)
    result(job)
    httpx.put(job["cancel_url"])
    stats = httpx.get(server.base_url + "/_fluxnb/stats").json()
    assert stats == server.service.stats
    assert stats["requests"]["submit"] == 1
    assert stats["requests"]["result"] == 1 and stats["requests"]["cancel"] == 1
    assert stats["requests"]["status"] >= 1
    assert stats["jobs"]["completed"] == 1 and stats["jobs"]["submitted"] == 1
    info = httpx.get(server.base_url + "/_fluxnb/info").json()
    assert info["engine"]["name"] == "null" and info["engine"]["generative"] is False
    assert info["version"]


def test_tls(server_factory: Callable[..., BackgroundServer], tmp_path: Any) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    server = server_factory(engine="null", port=0, certfile=str(certfile), keyfile=str(keyfile))
    assert server.base_url.startswith("https://127.0.0.1:")
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with httpx.Client(verify=ctx) as client:
        r = client.post(server.base_url + SUBMIT, json=body())
        assert r.status_code == 200
        job = r.json()
        assert job["response_url"].startswith(server.base_url + "/fal-ai/flux-lora/requests/")
        eventually(lambda: client.get(job["status_url"]).json()["status"] == "COMPLETED", 10)
        out = client.get(job["response_url"]).json()
        assert out["images"][0]["url"].startswith("https://127.0.0.1:")


def test_workers_run_in_parallel_within_engine_max_concurrency(
        server_factory: Callable[..., BackgroundServer]) -> None:
    from fluxnb.server.engines import Engine, EngineOutput, register_engine

    class Counting(Engine):
        name = "counting-test"
        generative = False
        max_concurrency: int | None = None

        def __init__(self, limit: int | None = None):
            self.max_concurrency = limit
            self.active = 0
            self.peak = 0
            self.lock = threading.Lock()

        def run(self, request: Any, ctx: Any) -> Any:
            with self.lock:
                self.active += 1
                self.peak = max(self.peak, self.active)
            try:
                for k in range(1, 11):
                    time.sleep(0.04)
                    ctx.step(k, 10)
            finally:
                with self.lock:
                    self.active -= 1
            return EngineOutput(images=[request.image])

    register_engine("counting-test", Counting)
    for limit, expected in ((None, 3), (1, 1)):
        server = server_factory(engine="counting-test", engine_options={"limit": limit},
                                workers=3, port=0)
        jobs = [submit(server) for _ in range(3)]
        for job in jobs:
            assert wait_for(job).get("error") is None
        assert server.service.engine.peak == expected  # type: ignore[attr-defined]


#: What a 401 from fluxnb's own server must tell a student: every way to pass a key.
HOW_TO_PASS_A_KEY = ("key=", "fluxnb.connect", "FLUXNB_KEY", "fluxnb run --key", "FAL_KEY")


def test_401_keeps_fals_shape_and_says_how_to_pass_a_key(
        server_factory: Callable[..., BackgroundServer]) -> None:
    from fluxnb.client import QueueClient
    from fluxnb.errors import QueueHTTPError

    secret = "class-" + os.urandom(6).hex()
    server = server_factory(engine="null", key=secret)
    submitted = httpx.post(server.base_url + SUBMIT, json=body(),
                           headers={"Authorization": f"Key {secret}"}).json()
    for method, url, headers in (
            ("POST", server.base_url + SUBMIT, {}),                                  # none sent
            ("POST", server.base_url + SUBMIT, {"Authorization": f"Key {secret}x"}),  # wrong
            ("POST", server.base_url + SUBMIT, {"Authorization": f"Bearer {secret}"}),
            ("GET", submitted["status_url"], {"Authorization": "Key wrong"})):
        r = httpx.request(method, url, headers=headers, json=body() if method == "POST" else None)
        assert r.status_code == 401 and r.headers["content-type"] == "application/json"
        assert list(r.json()) == ["detail"] and isinstance(r.json()["detail"], str)  # fal's shape
        for hint in HOW_TO_PASS_A_KEY:
            assert hint in r.json()["detail"], (hint, r.text)
        assert secret not in r.text
    with QueueClient(server.base_url, key="not-the-key") as client:  # what a student sees
        with pytest.raises(QueueHTTPError) as info:
            client.submit(**body())
    assert info.value.status_code == 401
    assert "FLUXNB_KEY" in str(info.value) and "fluxnb run --key" in str(info.value)
