"""The ``diffusers`` engine end to end, on a tiny FLUX built in code (no network, no weights).

One module-wide fixture builds the tiny pipeline, saves it with ``save_pretrained`` and starts one
local server that loads it with ``FluxInpaintPipeline.from_pretrained(folder)``, the same call
that loads FLUX.1-dev. torch and diffusers are imported once, by that fixture.

``FLUXNB_TEST_DEVICE=cuda`` runs the same tests on a GPU (default: cpu).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from fluxnb.cli import main as cli_main
from fluxnb.server import BackgroundServer, ServerConfig
from fluxnb.server.engines import EngineCancelled, EngineInputError, EngineRequest, create_engine
from fluxnb.server.engines.compose import paste_back
from fluxnb.server.engines.flux_diffusers import SAFETY_NOTICE, DiffusersEngine
from fluxnb.server.engines.flux_support import (
    denoising_steps,
    lora_cache_file,
    pad_pair,
    padded_size,
    resolve_device,
    resolve_dtype,
)
from fluxnb.server.engines.testing import RecordingContext
from tests.conftest import make_test_image, make_test_mask
from tests.support import ServeProcess, eventually, self_signed_cert, tls_context

_HAVE_EXTRA = all(importlib.util.find_spec(m) is not None
                  for m in ("torch", "diffusers", "transformers", "peft"))
pytestmark = pytest.mark.skipif(not _HAVE_EXTRA, reason="needs the fluxnb[diffusers] extra")

DEVICE = os.environ.get("FLUXNB_TEST_DEVICE", "cpu")
SUBMIT = "/fal-ai/flux-lora/inpainting"
HERE = Path(__file__).resolve().parents[1]
SIZE = 64
STEPS = 3


def _uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


IMAGE_URI = _uri(make_test_image(SIZE, SIZE))
MASK_URI = _uri(make_test_mask(SIZE, SIZE))


class Tiny:
    """What the module fixture made: the model folder, two LoRA files and the running server."""

    def __init__(self, folder: Path, lora_a: Path, lora_b: Path, server: BackgroundServer,
                 cache: Path):
        self.folder, self.lora_a, self.lora_b, self.server, self.cache = (folder, lora_a, lora_b,
                                                                          server, cache)

    @property
    def engine(self) -> DiffusersEngine:
        engine = self.server.service.engine
        assert isinstance(engine, DiffusersEngine)
        return engine


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tiny]:
    with pytest.MonkeyPatch.context() as mp:
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            mp.setenv(name, "1")
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
        from tests.tinyflux import MLP_TARGETS, import_diffusers, make_tiny_lora, save_tiny_pipeline

        import_diffusers()
        root = tmp_path_factory.mktemp("tinyflux")
        folder = save_tiny_pipeline(root / "tiny-flux")
        lora_a = make_tiny_lora(root / "loras" / "a.safetensors", seed=1)
        lora_b = make_tiny_lora(root / "loras" / "b.safetensors", seed=2, targets=MLP_TARGETS)
        cache = root / "lora-cache"
        # two workers: the engine itself must keep the pipeline to one job at a time (its own
        # device lock); LoRAs only from root/loras; LoRA URLs on loopback need the lab switch
        server = BackgroundServer(ServerConfig(
            engine="diffusers", workers=2, port=0, lora_dir=str(lora_a.parent),
            allow_private_fetch=True,
            engine_options={"model": str(folder), "device": DEVICE, "lora_cache": str(cache)},
        )).start()
        try:
            yield Tiny(folder, lora_a, lora_b, server, cache)
        finally:
            server.stop()


# -- helpers ------------------------------------------------------------------------------------


def submit(tiny: Tiny, **fields: Any) -> dict[str, Any]:
    body = {"prompt": "a red fox", "image_url": IMAGE_URI, "mask_url": MASK_URI,
            "num_inference_steps": STEPS, "output_format": "png", "seed": 1, **fields}
    r = httpx.post(tiny.server.base_url + SUBMIT, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def wait(job: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def completed() -> dict[str, Any] | None:
        seen.update(httpx.get(job["status_url"], params={"logs": "1"}).json())
        return dict(seen) if seen["status"] == "COMPLETED" else None

    data: dict[str, Any] = eventually(completed, timeout, lambda: f"job never completed: {seen}",
                                      interval=0.01)
    return data


def run(tiny: Tiny, **fields: Any) -> tuple[dict[str, Any], list[str]]:
    """Submit, wait, and return (result JSON, log messages); the job must succeed."""
    job = submit(tiny, **fields)
    status = wait(job)
    r = httpx.get(job["response_url"])
    assert r.status_code == 200, (r.text, [x["message"] for x in status["logs"]])
    return r.json(), [x["message"] for x in status["logs"]]


def failed(tiny: Tiny, **fields: Any) -> tuple[httpx.Response, dict[str, Any]]:
    job = submit(tiny, **fields)
    status = wait(job)
    return httpx.get(job["response_url"]), status


def pixels(result: dict[str, Any], i: int = 0) -> np.ndarray:
    data = httpx.get(result["images"][i]["url"]).content
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


def image_of(tiny: Tiny, **fields: Any) -> np.ndarray:
    return pixels(run(tiny, **fields)[0])


# -- pure helpers (no torch needed, but kept with the engine's tests) --------------------------


def test_size_device_dtype_and_step_helpers() -> None:
    assert padded_size(72, 56) == (80, 64) and padded_size(64, 64) == (64, 64)
    img, msk, padded = pad_pair(make_test_image(72, 56), make_test_mask(72, 56))
    assert padded and img.size == msk.size == (80, 64)
    # the original pixels are untouched; the padding reflects them
    assert np.array_equal(np.asarray(img)[:56, :72], np.asarray(make_test_image(72, 56)))
    assert np.array_equal(np.asarray(img)[:56, 72], np.asarray(make_test_image(72, 56))[:, 70])
    assert resolve_device("auto", cuda_available=True) == "cuda"
    assert resolve_device("auto", cuda_available=False) == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu", True)
    assert resolve_dtype(None, "cuda") == "bfloat16" and resolve_dtype(None, "cpu") == "float32"
    with pytest.raises(ValueError, match="dtype must be"):
        resolve_dtype("int8", "cuda")
    assert [denoising_steps(28, s) for s in (1.0, 0.85, 0.3)] == [28, 24, 9]


def test_auto_device_picks_cuda_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    import fluxnb.server.engines.flux_diffusers as mod

    monkeypatch.setattr(mod, "_cuda_available", lambda device: True)
    engine = DiffusersEngine(model="x/y", device="auto")
    assert (engine.device, engine.dtype) == ("cuda", "bfloat16")
    monkeypatch.setattr(mod, "_cuda_available", lambda device: False)
    engine = DiffusersEngine(model="x/y", device="auto")
    assert (engine.device, engine.dtype) == ("cpu", "float32")
    with pytest.raises(ValueError, match="offload needs a CUDA device"):
        DiffusersEngine(model="x/y", device="cpu", offload=True)
    with pytest.raises(ValueError, match="needs a model"):
        create_engine("diffusers")


def test_cli_serve_flags_are_checked() -> None:
    with pytest.raises(SystemExit, match="needs --model"):
        cli_main(["serve", "--engine", "diffusers"])
    with pytest.raises(SystemExit, match="options of --engine diffusers"):
        cli_main(["serve", "--engine", "preview", "--model", "x/y"])


# -- the engine through the server -----------------------------------------------------------


def test_result_shape_labels_and_honest_safety_note(tiny: Tiny) -> None:
    out, logs = run(tiny, enable_safety_checker=True)
    assert out["engine"] == "diffusers" and out["model"] == str(tiny.folder)
    assert out["seed"] == 1 and out["prompt"] == "a red fox"
    assert out["has_nsfw_concepts"] == [False]
    image = out["images"][0]
    assert (image["width"], image["height"], image["content_type"]) == (SIZE, SIZE, "image/png")
    assert {"inference", "encode_prompt", "denoise_and_decode"} <= set(out["timings"])
    assert SAFETY_NOTICE in logs and out["safety_checker"] == SAFETY_NOTICE
    assert logs[0] == "engine: diffusers"
    info = httpx.get(tiny.server.base_url + "/_fluxnb/info").json()["engine"]
    assert info["name"] == "diffusers" and info["model"] == str(tiny.folder)
    assert info["generative"] is True and info["loaded"] is True and info["device"] == DEVICE


def test_same_seed_same_pixels_other_seed_differs(tiny: Tiny) -> None:
    a, b, c = image_of(tiny, seed=11), image_of(tiny, seed=11), image_of(tiny, seed=12)
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 0


def test_random_seed_is_drawn_returned_and_reproduces(tiny: Tiny) -> None:
    out, logs = run(tiny, seed=None)
    seed = out["seed"]
    assert isinstance(seed, int) and f"seed: {seed} (random)" in logs
    assert np.array_equal(pixels(out), image_of(tiny, seed=seed))


def test_each_of_several_images_is_reproducible_alone(tiny: Tiny) -> None:
    out, logs = run(tiny, seed=40, num_images=3)
    imgs = [pixels(out, i) for i in range(3)]
    assert len(out["images"]) == 3 and out["has_nsfw_concepts"] == [False] * 3
    assert np.abs(imgs[0] - imgs[1]).max() > 0 and np.abs(imgs[1] - imgs[2]).max() > 0
    assert np.array_equal(imgs[2], image_of(tiny, seed=42))   # image i uses seed + i
    assert np.array_equal(imgs[0], image_of(tiny, seed=40))
    assert f"image 3/3: step {STEPS}/{STEPS}" in logs


@pytest.mark.parametrize("field,other", [("prompt", "a blue whale"), ("guidance_scale", 12.0),
                                         ("strength", 0.5), ("num_inference_steps", 5)])
def test_each_parameter_reaches_the_pipeline(tiny: Tiny, field: str, other: Any) -> None:
    assert np.abs(image_of(tiny) - image_of(tiny, **{field: other})).max() > 0


def test_jpeg_output(tiny: Tiny) -> None:
    out, _ = run(tiny, output_format="jpeg")
    assert out["images"][0]["content_type"] == "image/jpeg"
    assert httpx.get(out["images"][0]["url"]).content[:3] == b"\xff\xd8\xff"


def test_size_not_a_multiple_of_16_is_padded_and_cropped_back(tiny: Tiny) -> None:
    out, logs = run(tiny, image_url=_uri(make_test_image(72, 56)),
                    mask_url=_uri(make_test_mask(72, 56)))
    image = out["images"][0]
    assert (image["width"], image["height"]) == (72, 56)
    assert pixels(out).shape == (56, 72, 3)
    assert out["padded_to"] == {"width": 80, "height": 64}
    assert any("padded (reflected) to 80x64" in line for line in logs), logs


@pytest.mark.parametrize("steps,strength,expected", [(4, 1.0, 4), (4, 0.5, 2), (6, 0.3, 2)])
def test_one_log_line_per_denoising_step_that_runs(tiny: Tiny, steps: int, strength: float,
                                                   expected: int) -> None:
    out, logs = run(tiny, num_inference_steps=steps, strength=strength)
    step_lines = [line for line in logs if line.startswith("step ")]
    assert step_lines == [f"step {k}/{expected}" for k in range(1, expected + 1)]
    assert out["denoising_steps"] == expected


def test_step_logs_arrive_through_the_sse_stream(tiny: Tiny) -> None:
    job = submit(tiny, num_inference_steps=4, strength=1.0)
    messages: list[str] = []
    with httpx.stream("GET", job["status_url"] + "/stream", params={"logs": "1"},
                      timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                messages += [x["message"] for x in event.get("logs") or []]
                if event["status"] == "COMPLETED":
                    break
    assert {f"step {k}/4" for k in range(1, 5)} <= set(messages)


# -- LoRAs ------------------------------------------------------------------------------------


def test_lora_at_scale_1_changes_the_output_and_scale_0_equals_the_base(tiny: Tiny) -> None:
    base = image_of(tiny)
    lora = image_of(tiny, loras=[{"path": str(tiny.lora_a), "scale": 1.0}])
    zero = image_of(tiny, loras=[{"path": str(tiny.lora_a), "scale": 0.0}])
    assert np.abs(base - lora).max() > 2
    assert np.array_equal(base, zero)


def test_requests_without_loras_run_on_the_base_weights(tiny: Tiny) -> None:
    run(tiny, loras=[{"path": str(tiny.lora_a), "scale": 1.0},
                     {"path": str(tiny.lora_b), "scale": 1.0}])
    after, logs = run(tiny)
    assert "loras: none; LoRAs disabled (base weights)" in logs
    # a fresh engine that never saw a LoRA gives the same pixels
    fresh = DiffusersEngine(model=str(tiny.folder), device=DEVICE)
    fresh.load()
    params = {"prompt": "a red fox", "num_inference_steps": STEPS, "guidance_scale": 3.5,
              "strength": 0.85, "num_images": 1, "enable_safety_checker": True, "loras": []}
    image, mask = make_test_image(SIZE, SIZE), make_test_mask(SIZE, SIZE)
    out = fresh.run(EngineRequest(image=image, mask=mask, params=params, seed=1),
                    RecordingContext())
    # the server pastes the input back beyond the feather band (issue 12); so does this side
    expected = paste_back(image, out.images[0], mask, after["paste_back"]["feather_px"])
    assert np.array_equal(pixels(after), np.asarray(expected).astype(np.int16))


def test_a_lora_at_scale_0_is_left_out_so_the_job_runs_on_the_base_weights(tiny: Tiny) -> None:
    """Issue 13: scale 0 disables the adapter (the base model), it does not set weight 0."""
    base = image_of(tiny)
    run(tiny, loras=[{"path": str(tiny.lora_a), "scale": 1.0}])      # an adapter is active now
    zero, logs = run(tiny, loras=[{"path": str(tiny.lora_a), "scale": 0.0}])
    assert "loras: none; LoRAs disabled (base weights)" in logs
    assert zero["loras"] == []
    assert np.array_equal(pixels(zero), base)
    mixed, logs = run(tiny, loras=[{"path": str(tiny.lora_a), "scale": 0.0},
                                   {"path": str(tiny.lora_b), "scale": 0.5}])
    assert [x["path"] for x in mixed["loras"]] == [str(tiny.lora_b)]


def test_two_loras_reach_the_pipeline_with_exactly_their_scales(tiny: Tiny) -> None:
    pipe = tiny.engine.pipe
    calls: list[tuple[list[str], list[float]]] = []
    original = pipe.set_adapters

    def spy(names: Any, adapter_weights: Any = None) -> Any:
        calls.append((list(names), list(adapter_weights)))
        return original(names, adapter_weights=adapter_weights)

    pipe.set_adapters = spy
    try:
        both, logs = run(tiny, loras=[{"path": str(tiny.lora_a), "scale": 0.7},
                                      {"path": str(tiny.lora_b), "scale": 0.3}])
    finally:
        del pipe.set_adapters
    names = [x["adapter"] for x in both["loras"]]
    assert calls == [(names, [0.7, 0.3])]
    assert sorted(pipe.get_active_adapters()) == sorted(names)
    # read the scales back from peft's layers: scaling = weight * alpha / r (alpha == r here)
    seen: dict[str, set[float]] = {name: set() for name in names}
    for module in pipe.transformer.modules():
        for name in names:
            if name in getattr(module, "scaling", {}):
                seen[name].add(round(float(module.scaling[name]), 6))
    assert seen == {names[0]: {0.7}, names[1]: {0.3}}
    only_a = image_of(tiny, loras=[{"path": str(tiny.lora_a), "scale": 0.7}])
    only_b = image_of(tiny, loras=[{"path": str(tiny.lora_b), "scale": 0.3}])
    combined = pixels(both)
    assert np.abs(combined - only_a).max() > 0 and np.abs(combined - only_b).max() > 0


def test_loras_are_loaded_once_and_cached(tiny: Tiny) -> None:
    path = str(tiny.lora_a)
    _, first = run(tiny, loras=[{"path": path, "scale": 0.5}])
    _, second = run(tiny, loras=[{"path": path, "scale": 0.9}])
    assert not any("loaded" in line for line in second), second
    assert tiny.engine.info()["loras_loaded"] >= 1


def test_lora_by_file_url_and_by_http_url_with_a_download_cache(tiny: Tiny) -> None:
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            hits.append(self.path)

    handler = functools.partial(Handler, directory=str(tiny.lora_a.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/a.safetensors"
        local = image_of(tiny, loras=[{"path": str(tiny.lora_a), "scale": 1.0}])
        by_file = image_of(tiny, loras=[{"path": tiny.lora_a.as_uri(), "scale": 1.0}])
        by_url = image_of(tiny, loras=[{"path": url, "scale": 1.0}])
        again = image_of(tiny, loras=[{"path": url, "scale": 1.0}])
        missing, status = failed(tiny, loras=[{"path": url.replace("a.safe", "nope.safe")}])
        junk = failed(tiny, loras=[{"path": url.replace("a.safe", "notes.txt?")}])[0]
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert np.array_equal(local, by_file) and np.array_equal(local, by_url)
    assert np.array_equal(by_url, again)
    assert hits.count("/a.safetensors") == 1   # downloaded once
    cached = lora_cache_file(tiny.cache, url)
    assert cached.read_bytes() == tiny.lora_a.read_bytes()
    # one message for every failed download (no status / size oracle)
    assert missing.status_code == 422 == junk.status_code
    assert missing.json()["detail"] == junk.json()["detail"]
    assert missing.json()["detail"][0]["msg"] == "loras[0].path: the server could not fetch this URL"


def test_bad_lora_paths_are_422s_at_submit_with_one_message(tiny: Tiny, tmp_path: Path) -> None:
    inside_junk = tiny.lora_a.parent / "junk.safetensors"
    inside_junk.write_bytes(b"not a safetensors file")
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(tiny.lora_a.read_bytes())   # a real LoRA, but outside --lora-dir
    (tiny.lora_a.parent / "escape.safetensors").symlink_to(outside)
    try:
        answers = []
        for path in (str(tmp_path / "nope.safetensors"), str(outside), "../" + outside.name,
                     "escape.safetensors", str(inside_junk), "someone/some-lora", "/etc/passwd"):
            body = {"prompt": "x", "image_url": IMAGE_URI, "mask_url": MASK_URI,
                    "loras": [{"path": str(tiny.lora_a)}, {"path": path}]}
            answers.append(httpx.post(tiny.server.base_url + SUBMIT, json=body))
    finally:
        inside_junk.unlink()
        (tiny.lora_a.parent / "escape.safetensors").unlink()
    assert {r.status_code for r in answers} == {422}
    details = {json.dumps(r.json()["detail"]) for r in answers}
    assert len(details) == 1   # the same answer whether or not the file exists
    (detail,) = answers[0].json()["detail"]
    assert detail["loc"] == ["body", "loras[1].path"] and detail["type"] == "lora_not_allowed"
    assert "--lora-dir" in detail["msg"]
    # the pipeline is still fine afterwards
    assert np.array_equal(image_of(tiny), image_of(tiny))


def test_the_engine_checks_the_rules_again(tiny: Tiny, tmp_path: Path) -> None:
    """Called directly (no submit check), the engine refuses a LoRA outside its lora_dir, and a
    file that turned into a pickle after it was accepted, and loads one inside."""
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(tiny.lora_a.read_bytes())
    params = {"prompt": "x", "num_inference_steps": 1, "guidance_scale": 3.5, "strength": 1.0,
              "num_images": 1, "enable_safety_checker": False}

    def run_with(path: str) -> Any:
        request = EngineRequest(image=make_test_image(SIZE, SIZE), mask=make_test_mask(SIZE, SIZE),
                                params={**params, "loras": [{"path": path, "scale": 1.0}]}, seed=0)
        return tiny.engine.run(request, RecordingContext())

    with pytest.raises(EngineInputError) as info:
        run_with(str(outside))
    assert info.value.field == "loras[0].path" and "not an allowed LoRA" in str(info.value)
    swapped = tiny.lora_a.parent / "swapped.safetensors"
    swapped.write_bytes(tiny.lora_a.read_bytes())
    try:
        assert run_with(swapped.name).extra["loras"][0]["path"] == swapped.name
        import pickle
        swapped.write_bytes(pickle.dumps({"lora_A": 1}))   # new size/mtime: a new cache key
        with pytest.raises(EngineInputError, match="not an allowed LoRA"):
            run_with(swapped.name)
    finally:
        swapped.unlink()


# -- progress, cancel, one job at a time --------------------------------------------------------


class SlowSteps:
    """Make every transformer call take ``delay`` seconds longer, and count overlapping calls."""

    def __init__(self, engine: DiffusersEngine, delay: float):
        self.delay, self.active, self.peak = delay, 0, 0
        self._lock = threading.Lock()
        transformer = engine.pipe.transformer
        self._handles = [transformer.register_forward_pre_hook(self._before),
                         transformer.register_forward_hook(self._after)]

    def _before(self, module: Any, args: Any) -> None:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(self.delay)

    def _after(self, module: Any, args: Any, output: Any) -> None:
        with self._lock:
            self.active -= 1

    def __enter__(self) -> SlowSteps:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()


def test_cancel_mid_run_stops_between_steps_and_the_next_job_is_fine(tiny: Tiny) -> None:
    before = image_of(tiny, seed=3)
    pipe = tiny.engine.pipe
    with SlowSteps(tiny.engine, 0.05):
        job = submit(tiny, seed=3, num_inference_steps=40, strength=1.0)
        def at_step_2() -> bool:
            logs = [x["message"] for x in httpx.get(job["status_url"], params={"logs": "1"})
                    .json().get("logs") or []]
            return any(line.startswith("step 2/40") for line in logs)

        eventually(at_step_2, 30, "the job never reached step 2/40", interval=0.01)
        assert httpx.put(job["cancel_url"]).status_code == 202
        status = wait(job)
    logs = [x["message"] for x in status["logs"]]
    assert status["error_type"] == "request_cancelled"
    assert "step 40/40" not in logs and "cancelled" in logs
    assert httpx.get(job["response_url"]).status_code == 400
    assert tiny.engine.pipe is pipe                       # the model stayed loaded
    assert np.array_equal(image_of(tiny, seed=3), before)  # and still gives the same pixels


def test_one_job_on_the_device_at_a_time_others_wait(tiny: Tiny) -> None:
    stats_url = tiny.server.base_url + "/_fluxnb/stats"
    with SlowSteps(tiny.engine, 0.03) as slow:
        first = submit(tiny, num_inference_steps=10, strength=1.0)
        second = submit(tiny, num_inference_steps=10, strength=1.0, seed=2)
        most_running, second_states = 0, set()

        def second_completed() -> bool:
            nonlocal most_running
            stats = httpx.get(stats_url).json()   # one consistent snapshot of the queue
            most_running = max(most_running, stats["running"])
            state = httpx.get(second["status_url"]).json()["status"]
            second_states.add(state)
            return bool(state == "COMPLETED")

        eventually(second_completed, 30, lambda: f"the second job went {second_states}",
                   interval=0.005)
        wait(first)
    # the server has two workers and the engine takes both (LoRA downloads overlap), yet the
    # pipeline never runs two jobs at once: its own device lock
    assert most_running <= 2 and "COMPLETED" in second_states
    assert slow.peak == 1


def test_a_lora_download_runs_while_another_job_holds_the_device(tiny: Tiny) -> None:
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            hits.append(self.path)

    handler = functools.partial(Handler, directory=str(tiny.lora_b.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_port}/b.safetensors?overlap=1"
    try:
        with SlowSteps(tiny.engine, 0.05):
            first = submit(tiny, num_inference_steps=40, strength=1.0)
            eventually(lambda: httpx.get(first["status_url"]).json()["status"] == "IN_PROGRESS",
                       30, "the first job never started", interval=0.005)
            second = submit(tiny, loras=[{"path": url, "scale": 1.0}])
            eventually(lambda: any("overlap=1" in h for h in hits), 30,
                       "the second job's LoRA was never downloaded", interval=0.005)
            first_state = httpx.get(first["status_url"]).json()["status"]
            wait(first)
        wait(second)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert first_state == "IN_PROGRESS"   # the download did not wait for the device


def test_direct_engine_cancel_raises_engine_cancelled(tiny: Tiny) -> None:
    params = {"prompt": "x", "num_inference_steps": 4, "guidance_scale": 3.5, "strength": 1.0,
              "num_images": 1, "enable_safety_checker": False, "loras": []}
    ctx = RecordingContext(cancel_after=1)
    with pytest.raises(EngineCancelled):
        tiny.engine.run(EngineRequest(image=make_test_image(SIZE, SIZE),
                                      mask=make_test_mask(SIZE, SIZE), params=params, seed=0), ctx)
    assert [line for line in ctx.lines if line.startswith("step")] == ["step 1/4"]
    assert SAFETY_NOTICE not in ctx.lines   # only said when the checker was asked for


# -- the CLI and the official fal-client ------------------------------------------------------


@pytest.mark.slow
def test_cli_serve_and_the_official_fal_client_get_a_complete_result(
        tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed_cert(tmp_path)
    image_path, mask_path = tmp_path / "image.png", tmp_path / "mask.png"
    make_test_image(SIZE, SIZE).save(image_path)
    make_test_mask(SIZE, SIZE).save(mask_path)
    args = ["--engine", "diffusers", "--model", str(tiny.folder), "--device", DEVICE,
            "--lora-dir", str(tiny.lora_a.parent),
            "--dtype", "float32" if DEVICE == "cpu" else "bfloat16"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    server = ServeProcess(args, cert=cert, key=key, log=tmp_path / "server.log")
    try:
        server.wait_ready(timeout=180)   # a fresh process imports torch + diffusers first
    except BaseException:
        server.stop()
        raise
    with server:
        env = dict(os.environ, FAL_KEY="diffusers-test-key",
                   FAL_QUEUE_RUN_HOST=f"127.0.0.1:{server.port}",
                   SSL_CERT_FILE=str(cert), NO_PROXY="127.0.0.1,localhost")
        done = subprocess.run([sys.executable, str(HERE / "diffusers_fal_probe.py"), str(image_path),
                               str(mask_path), str(tiny.lora_a)], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:] + server.output()[-3000:]
        seen = json.loads(done.stdout)
        info = httpx.get(server.base_url + "/_fluxnb/info", verify=tls_context(cert)).json()
        downloads = [httpx.get(img["url"], verify=tls_context(cert)).content
                     for img in seen["subscribe"]["images"]]
    out = seen["subscribe"]
    assert info["engine"]["name"] == "diffusers" and info["engine"]["model"] == str(tiny.folder)
    assert out["engine"] == "diffusers" and out["seed"] == 5 and out["prompt"] == "a red fox"
    assert out["has_nsfw_concepts"] == [False, False]
    assert [x["scale"] for x in out["loras"]] == [0.8]
    for image, data in zip(out["images"], downloads, strict=True):
        assert image["url"].startswith(f"https://127.0.0.1:{server.port}/")
        assert (image["width"], image["height"], image["content_type"]) == (SIZE, SIZE, "image/png")
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (SIZE, SIZE)
    assert hashlib.sha256(downloads[0]).digest() != hashlib.sha256(downloads[1]).digest()
    running = [line for u in seen["updates"] if u["type"] == "InProgress" for line in u.get("logs", [])]
    assert "Completed" == seen["updates"][-1]["type"]
    steps = [line for line in seen["subscribe_logs"] if "step " in line and "image " in line]
    assert steps == [f"image {i}/2: step {k}/3" for i in (1, 2) for k in (1, 2, 3)]
    assert set(running) <= set(seen["subscribe_logs"])
    assert seen["get"]["images"][0]["width"] == SIZE and seen["get"]["loras"] == []
    assert "loras: none; LoRAs disabled (base weights)" in seen["final_logs"]
