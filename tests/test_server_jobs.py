"""Job bookkeeping: late cancels keep finished images; stored jobs stay small."""

from __future__ import annotations

import threading

import httpx

from fluxnb.datauri import encode_data_uri
from fluxnb.server.engines import Engine, EngineOutput

from .conftest import make_test_image, make_test_mask

_IN_LAST_PHASE = threading.Event()
_RELEASE = threading.Event()


class LateEngine(Engine):
    """Does its steps, then (past the last cancel check) waits for the test before returning."""

    name = "late"
    description = "test engine"
    generative = False

    def run(self, request, ctx):  # type: ignore[no-untyped-def]
        ctx.step(1, 1)
        _IN_LAST_PHASE.set()
        _RELEASE.wait(10)
        return EngineOutput(images=[request.image.copy()])


def _png(image) -> str:  # type: ignore[no-untyped-def]
    import io

    buf = io.BytesIO()
    image.save(buf, "PNG")
    return encode_data_uri(buf.getvalue(), "image/png")


def test_late_cancel_keeps_the_finished_images(server_factory) -> None:
    server = server_factory(engine=f"{__name__}:LateEngine")
    body = {"prompt": "p", "image_url": _png(make_test_image()), "mask_url": _png(make_test_mask())}
    with httpx.Client() as http:
        job = http.post(f"{server.base_url}/fal-ai/flux-lora/inpainting", json=body).json()
        assert _IN_LAST_PHASE.wait(10)
        cancel = http.put(job["cancel_url"])
        assert cancel.status_code == 202
        _RELEASE.set()
        with http.stream("GET", job["status_url"] + "/stream", params={"logs": "1"}) as stream:
            for line in stream.iter_lines():
                if '"COMPLETED"' in line:
                    break
        status = http.get(job["status_url"], params={"logs": "1"}).json()
        result = http.get(job["response_url"])
    assert status["status"] == "COMPLETED" and status.get("error") is None
    assert any("kept them" in entry["message"] for entry in status["logs"])
    assert result.status_code == 200 and len(result.json()["images"]) == 1


def test_stored_jobs_do_not_keep_the_base64_inputs(live_server) -> None:
    image = _png(make_test_image(200, 150))
    body = {"prompt": "p", "image_url": image, "mask_url": _png(make_test_mask(200, 150))}
    with httpx.Client() as http:
        job = http.post(f"{live_server.base_url}/fal-ai/flux-lora/inpainting", json=body).json()
        assert http.get(job["response_url"]).status_code in (200, 400)
    stored = live_server.service.get(job["request_id"])
    assert len(image) > 10_000
    assert len(stored.params["image_url"]) < 100 and stored.params["image_url"].startswith("data:image/png")


def test_sync_run_route_answers_with_the_output(live_server) -> None:
    body = {"prompt": "p", "image_url": _png(make_test_image()), "mask_url": _png(make_test_mask()),
            "seed": 9, "num_images": 2}
    url = f"{live_server.base_url}/_fluxnb/run/fal-ai/flux-lora/inpainting"
    with httpx.Client() as http:
        out = http.post(url, json=body)
        bad = http.post(url, json=dict(body, strength=3))
        unknown_app = http.post(f"{live_server.base_url}/_fluxnb/run/fal-ai/other", json=body)
    assert out.status_code == 200
    data = out.json()
    assert data["seed"] == 9 and [(i["width"], i["height"]) for i in data["images"]] == [(96, 64)] * 2
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "strength"]
    assert unknown_app.status_code == 404


def test_a_watcher_without_logs_is_not_woken_by_every_step(server_factory) -> None:
    """Step logs wake log-showing streams only: a status stream without logs (what clients and
    sweeps open) is woken by state changes, not by each of the engine's steps."""
    import asyncio

    server = server_factory(engine="null", engine_options={"delay": 0.3})
    body = {"prompt": "p", "image_url": _png(make_test_image()), "mask_url": _png(make_test_mask())}

    async def count_wakeups(job, logs: bool) -> int:  # type: ignore[no-untyped-def]
        wakeups = 0
        with server.service.watch(job, logs=logs) as changed:
            while job.state != "COMPLETED":
                try:
                    await asyncio.wait_for(changed.wait(), timeout=5)
                except TimeoutError:
                    break
                changed.clear()
                wakeups += 1
        return wakeups

    async def scenario() -> tuple[int, int]:
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"{server.base_url}/fal-ai/flux-lora/inpainting", json=body)
            job = server.service.get(answer.json()["request_id"])
            assert job is not None
            quiet, chatty = await asyncio.gather(count_wakeups(job, False), count_wakeups(job, True))
            return quiet, chatty

    quiet, chatty = asyncio.run(scenario())
    assert chatty >= 10          # the null engine logs 10 steps, and each wakes a log watcher
    assert 1 <= quiet <= 4       # started, (position), completed: never once per step
