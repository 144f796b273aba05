"""The preview engine: deterministic, honest about what it is, and exact outside the hole."""

from __future__ import annotations

import io
import logging
import math
import sys
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from fluxnb.schema import validate_input
from fluxnb.server import BackgroundServer
from fluxnb.server.engines import EngineCancelled, EngineRequest, create_engine
from fluxnb.server.engines import fill as fill_mod
from fluxnb.server.engines.fill import patchmatch_fill
from fluxnb.server.engines.preview import NOTICE, PreviewEngine, feather_kernel, telea_fill, telea_radius
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


# -- issue 12, item 1: PatchMatch is the fill, Telea the fallback --------------------------------

def _brick(size: int, seed: int = 0) -> np.ndarray:
    """A tiled brick texture with grain, made in code."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    mortar = ((y % 16) < 3) | (((x + (y // 16 % 2) * 16) % 32) < 3)
    img = np.where(mortar[..., None], [200, 200, 190], [150, 60, 40]).astype(np.float32)
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


def _disk(size: int, area: float = 0.15, scale: float = 1.0) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return (x - size / 2) ** 2 + (y - size / 2) ** 2 < (scale * size * math.sqrt(area / math.pi)) ** 2


def _energy(img: np.ndarray, where: np.ndarray) -> float:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.mean((cv2.Sobel(g, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(g, cv2.CV_32F, 0, 1) ** 2)[where]))


def test_patchmatch_is_the_fill_in_use() -> None:
    assert ENGINE.info()["fill"] == "patchmatch"
    out = ENGINE.run(EngineRequest(image=make_test_image(64, 48), mask=make_test_mask(64, 48),
                                   params=validate_input({"prompt": "p", "image_url": "data:,",
                                                          "mask_url": "data:,"}, fill_defaults=True),
                                   seed=1), RecordingContext())
    assert out.extra["fill"] == "patchmatch" and out.extra["notice"] == NOTICE
    assert "not a generative model" in NOTICE


def test_falls_back_to_telea_when_the_extension_cannot_load(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    image, mask = make_test_image(128, 96), make_test_mask(128, 96)
    with_patchmatch = run(image, mask, seed=2)[0]
    monkeypatch.setitem(sys.modules, "patchmatch", None)   # `import patchmatch` raises ImportError
    monkeypatch.setattr(fill_mod, "_module", None)
    monkeypatch.setattr(fill_mod, "_loaded", False)
    engine = PreviewEngine()
    with caplog.at_level(logging.WARNING, logger="fluxnb.preview"):
        engine.load()
    assert engine.info()["fill"] == "telea"
    lines = [r.getMessage() for r in caplog.records if "falling back to OpenCV Telea" in r.getMessage()]
    assert len(lines) == 1
    with pytest.raises(RuntimeError, match="pip install pypatchmatch"):
        patchmatch_fill(np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), bool))
    checked = validate_input({"prompt": "p", "image_url": "data:,", "mask_url": "data:,"},
                             fill_defaults=True)
    out = engine.run(EngineRequest(image=image, mask=mask, params=checked, seed=2), RecordingContext())
    telea = np.asarray(out.images[0])
    assert out.extra["fill"] == "telea"
    assert not np.array_equal(telea, with_patchmatch)
    hole = np.asarray(mask) >= 128
    assert np.abs(telea[hole].astype(int) - np.asarray(image)[hole]).mean() > 1


def test_patchmatch_same_seed_repeats_other_seed_differs() -> None:
    img, hole = _brick(96), _disk(96, 0.2)
    a, b = patchmatch_fill(img, hole, seed=3), patchmatch_fill(img, hole, seed=3)
    c = patchmatch_fill(img, hole, seed=4)
    assert np.array_equal(a, b)
    assert np.abs(a[hole].astype(int) - c[hole]).mean() > 5     # another plausible fill
    images = run(Image.fromarray(img), Image.fromarray(hole.astype(np.uint8) * 255), seed=7,
                 num_images=2, strength=1.0)
    assert np.abs(images[0][hole].astype(int) - images[1][hole]).mean() > 5


@pytest.mark.parametrize(("width", "height"), [(77, 53), (300, 220)])
def test_patchmatch_keeps_size_and_every_pixel_outside_the_mask(width: int, height: int) -> None:
    image = make_test_image(width, height, seed=4)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 5: 4 * height // 5, width // 6: width // 2] = 255   # 300x220: a scaled-down fill
    mask[2:6, width - 9: width - 3] = 255                               # and a second, tiny hole
    hole, src = mask >= 128, np.asarray(image)
    for strength in (0.3, 1.0):
        out = run(image, Image.fromarray(mask), seed=5, strength=strength)[0]
        assert out.shape == (height, width, 3)
        assert np.array_equal(out[~hole], src[~hole])
        assert np.abs(out[hole].astype(int) - src[hole]).mean() > 1
    small = patchmatch_fill(src, hole, seed=1, work_pixels=2000)        # forced reduced scale
    assert small.shape == src.shape and np.array_equal(small[~hole], src[~hole])


@pytest.mark.parametrize(("size", "work_pixels"), [(128, None), (256, 6000)])
def test_a_textured_hole_is_filled_with_texture_not_a_smear(size: int, work_pixels: int | None) -> None:
    img, hole = _brick(size), _disk(size)
    inner, ring = _disk(size, scale=0.8), _disk(size, scale=1.5) & ~_disk(size, scale=1.1)
    around = _energy(img, ring)
    pm = patchmatch_fill(img, hole, seed=1, work_pixels=work_pixels)
    telea = telea_fill(img, hole, 3)
    pm_ratio, telea_ratio = _energy(pm, inner) / around, _energy(telea, inner) / around
    assert telea_ratio < 0.1                       # Telea's radial smear has almost no texture
    assert pm_ratio > 10 * telea_ratio
    if work_pixels is None:                        # full resolution: as textured as around it
        assert 0.6 < pm_ratio < 1.4
        # the mortar's bright colour is continued into the hole, not averaged away
        mortar = (img[ring].min(axis=1) > 170).mean()
        assert (pm[inner].min(axis=1) > 170).mean() > 0.5 * mortar
        assert (telea[inner].min(axis=1) > 170).mean() < 0.5 * mortar
