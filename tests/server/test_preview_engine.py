"""The preview engine: deterministic, honest about what it is, and exact outside the hole."""

from __future__ import annotations

import io
import math
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from fluxnb.schema import validate_input
from fluxnb.server import BackgroundServer
from fluxnb.server.engines import EngineCancelled, EngineRequest, create_engine
from fluxnb.server.engines.preview import NOTICE, feather_kernel, telea_fill, telea_radius
from fluxnb.server.engines.testing import RecordingContext
from tests.conftest import make_test_image, make_test_mask
from tests.server.test_server_contract import result, submit, wait_for

ENGINE = create_engine("preview")
ENGINE.load()


def run(image: Image.Image | None = None, mask: Image.Image | None = None, seed: int = 1,
        ctx: RecordingContext | None = None, **params: Any) -> list[np.ndarray]:
    image = image if image is not None else make_test_image(128, 96)
    mask = mask if mask is not None else make_test_mask(128, 96)
    checked = validate_input({"prompt": "p", "image_url": "data:,", "mask_url": "data:,", **params},
                             fill_defaults=True)
    request = EngineRequest(image=image, mask=mask, params=checked, seed=seed)
    out = ENGINE.run(request, ctx or RecordingContext())
    return [np.asarray(img) for img in out.images]


def test_same_seed_same_pixels_other_seed_differs() -> None:
    a, b, c = run(seed=5)[0], run(seed=5)[0], run(seed=6)[0]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_size_is_kept() -> None:
    image, mask = make_test_image(77, 53), make_test_mask(77, 53)
    assert run(image, mask)[0].shape == (53, 77, 3)


def test_pixels_outside_the_feather_band_are_identical() -> None:
    image, mask = make_test_image(128, 96), make_test_mask(128, 96)
    hole = np.asarray(mask) >= 128
    band = feather_kernel(128, 96) // 2
    near = cv2.dilate(hole.astype(np.uint8), np.ones((2 * band + 1, 2 * band + 1), np.uint8)) > 0
    src = np.asarray(image)
    for strength in (0.3, 1.0):
        out = run(image, mask, strength=strength)[0]
        assert np.array_equal(out[~near], src[~near])
        assert np.abs(out[hole].astype(int) - src[hole]).mean() > 1  # the hole did change


def test_outside_pixels_identical_through_the_server_as_png(live_server: BackgroundServer) -> None:
    job = submit(live_server, seed=3, output_format="png")
    wait_for(job)
    got = Image.open(io.BytesIO(httpx.get(result(job).json()["images"][0]["url"]).content))
    out, src = np.asarray(got), np.asarray(make_test_image())
    hole = np.asarray(make_test_mask()) >= 128
    band = feather_kernel(96, 64) // 2
    near = cv2.dilate(hole.astype(np.uint8), np.ones((2 * band + 1,) * 2, np.uint8)) > 0
    assert np.array_equal(out[~near], src[~near])


def test_steps_strength_and_params_effects() -> None:
    base = run(seed=2)[0]
    assert not np.array_equal(run(seed=2, num_inference_steps=1)[0], run(seed=2, num_inference_steps=50)[0])
    assert not np.array_equal(run(seed=2, strength=0.3)[0], base)
    src = np.asarray(make_test_image(128, 96)).astype(int)
    hole = np.asarray(make_test_mask(128, 96)) >= 128
    faint = run(seed=2, strength=0.01)[0].astype(int)
    full = run(seed=2, strength=1.0)[0].astype(int)
    assert np.abs(faint[hole] - src[hole]).mean() < 1.5
    assert np.abs(full[hole] - src[hole]).mean() > np.abs(faint[hole] - src[hole]).mean()
    # prompt, guidance and LoRAs never touch pixels
    same = run(seed=2, prompt="something else entirely", guidance_scale=30.0,
               loras=[{"path": "some/lora", "scale": 2.0}])[0]
    assert np.array_equal(same, base)


def test_num_images_are_seed_variants() -> None:
    images = run(seed=10, num_images=3)
    assert len(images) == 3
    for i, img in enumerate(images):
        assert np.array_equal(img, run(seed=10 + i)[0])
    assert not np.array_equal(images[0], images[1])


def test_step_logs_count_and_format() -> None:
    ctx = RecordingContext()
    run(ctx=ctx, num_inference_steps=28, strength=0.85)
    steps = [line for line in ctx.lines if "step" in line and "/" in line]
    assert steps[-1] == f"step {math.ceil(28 * 0.85)}/{math.ceil(28 * 0.85)}"
    ctx = RecordingContext()
    run(ctx=ctx, num_inference_steps=10, strength=1.0, num_images=2)
    assert "image 2/2: step 10/10" in ctx.lines
    assert any("no safety checker" in line for line in ctx.lines)


def test_cancel_stops_at_a_step() -> None:
    ctx = RecordingContext(cancel_after=3)
    with pytest.raises(EngineCancelled):
        run(ctx=ctx, num_images=4)
    assert ctx.steps == 3


def test_empty_mask_returns_the_input() -> None:
    image = make_test_image(64, 48)
    out = run(image, Image.new("L", (64, 48), 0))[0]
    assert np.array_equal(out, np.asarray(image))


def test_mask_of_another_size_is_resized() -> None:
    out = run(make_test_image(128, 96), make_test_mask(64, 48))[0]
    assert out.shape == (96, 128, 3)


def test_cropped_telea_matches_full_image_telea() -> None:
    img = np.asarray(make_test_image(256, 192, seed=3)).copy()
    hole = np.zeros((192, 256), bool)
    hole[60:130, 90:170] = True
    hole[10:20, 5:15] = True
    for radius in (1, 3, 5):
        cropped = telea_fill(img, hole, radius).astype(int)
        full = telea_fill(img, hole, radius, crop=False).astype(int)
        assert np.abs(cropped - full).max() <= 1
        assert np.abs(cropped - full).mean() < 0.05


def test_radius_mapping() -> None:
    assert [telea_radius(s) for s in (1, 13, 25, 28, 38, 50)] == [1, 2, 3, 3, 4, 5]


def test_output_is_labelled(live_server: BackgroundServer) -> None:
    job = submit(live_server, seed=4, guidance_scale=12.5, loras=[{"path": "a/b", "scale": 0.5}],
                 prompt="a lion")
    wait_for(job)
    out = result(job).json()
    assert out["engine"] == "preview" and out["notice"] == NOTICE
    assert {"prompt", "guidance_scale", "loras"} <= set(out["ignored_params"])
    assert out["guidance_scale"] == 12.5 and out["loras"] == [{"path": "a/b", "scale": 0.5}]
    assert out["prompt"] == "a lion"
    assert out["has_nsfw_concepts"] == [False]
    info = httpx.get(live_server.base_url + "/_fluxnb/info").json()["engine"]
    assert info["name"] == "preview" and info["generative"] is False


def test_same_seed_same_jpeg_bytes_through_the_server(live_server: BackgroundServer) -> None:
    blobs = []
    for _ in range(2):
        job = submit(live_server, seed=99)
        wait_for(job)
        blobs.append(httpx.get(result(job).json()["images"][0]["url"]).content)
    assert blobs[0] == blobs[1]
    job = submit(live_server, seed=100)
    wait_for(job)
    assert httpx.get(result(job).json()["images"][0]["url"]).content != blobs[0]
