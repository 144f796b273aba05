"""Job bookkeeping: late cancels keep finished images; stored jobs stay small."""

from __future__ import annotations

import threading

import httpx

from fluxnb.datauri import encode_data_uri
from fluxnb.server.engines import Engine, EngineOutput

from ..conftest import make_test_image, make_test_mask

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


_STEPS = 10
_GATE_ENTERED = threading.Event()
_GATE_STEP = threading.Semaphore(0)


class GateEngine(Engine):
    """Logs ``_STEPS`` steps, each only after the test releases it, and returns after one more
    release (no timing involved)."""

    name = "gate"
    description = "test engine"
    generative = False

    def run(self, request, ctx):  # type: ignore[no-untyped-def]
        _GATE_ENTERED.set()
        for k in range(1, _STEPS + 1):
            if not _GATE_STEP.acquire(timeout=10):
                raise RuntimeError(f"the test never released step {k}")
            ctx.step(k, _STEPS)
        if not _GATE_STEP.acquire(timeout=10):
            raise RuntimeError("the test never released the end of the job")
        return EngineOutput(images=[request.image.copy()])


def test_a_watcher_without_logs_is_not_woken_by_every_step(server_factory) -> None:
    """Step logs wake log-showing streams only: a status stream without logs (what clients and
    sweeps open) is woken by state changes, not by each of the engine's steps.

    Deterministic: the engine takes one step per release, and after each step the test waits
    for the log watcher's wake-up. Both wake-ups of one step are queued on this loop in the same
    ``_touch`` call, before the log watcher's waiter can resume, so by then a (wrong) wake-up of
    the quiet watcher has already happened and shows as its event being set."""
    import asyncio

    server = server_factory(engine=f"{__name__}:GateEngine")
    body = {"prompt": "p", "image_url": _png(make_test_image()), "mask_url": _png(make_test_mask())}

    async def woken(event: asyncio.Event) -> bool:
        await asyncio.wait_for(event.wait(), timeout=10)  # a hang guard, not a timing assumption
        event.clear()
        return True

    async def scenario() -> tuple[int, int, int]:
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"{server.base_url}/fal-ai/flux-lora/inpainting", json=body)
        job = server.service.get(answer.json()["request_id"])
        assert job is not None
        with server.service.watch(job, logs=False) as quiet, server.service.watch(job, logs=True) as chatty:
            # the engine has started: the start (and the seed log line) are behind us; any
            # wake-up they queued ran before this coroutine resumed (same FIFO loop queue)
            assert await asyncio.to_thread(_GATE_ENTERED.wait, 10)
            quiet.clear()
            chatty.clear()
            chatty_steps = quiet_steps = 0
            for _ in range(_STEPS):
                _GATE_STEP.release()
                chatty_steps += await woken(chatty)
                if quiet.is_set():
                    quiet_steps += 1
                    quiet.clear()
            _GATE_STEP.release()   # let the job finish: its only state change left
            await woken(quiet)
            state_when_woken = job.state
        return chatty_steps, quiet_steps, state_when_woken

    chatty_steps, quiet_steps, state_when_woken = asyncio.run(scenario())
    assert chatty_steps == _STEPS   # each step's log line wakes the log watcher
    assert quiet_steps == 0         # ... and never the watcher without logs,
    assert state_when_woken == "COMPLETED"   # which the completion does wake
