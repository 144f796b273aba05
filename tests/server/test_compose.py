"""Paste-back and crop-and-stitch maths (issue 12, items 3 and 4): pure functions, no server."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fluxnb.server.engines import create_engine
from fluxnb.server.engines.compose import (
    CropPlan,
    CropSettings,
    blend_alpha,
    crop_pair,
    default_feather,
    hole_of,
    paste_back,
    plan_crop,
    stitch,
    working_dims,
)

from ..conftest import make_test_image


def _disk(size: int, cx: int, cy: int, r: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return (((x - cx) ** 2 + (y - cy) ** 2) <= r * r).astype(np.uint8) * 255


def _distance_to(hole: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of every pixel to the nearest hole pixel (brute force)."""
    ys, xs = np.nonzero(hole)
    y, x = np.mgrid[0:hole.shape[0], 0:hole.shape[1]]
    d2 = (y[..., None] - ys) ** 2 + (x[..., None] - xs) ** 2
    return np.sqrt(d2.min(axis=-1))


@pytest.mark.parametrize("feather", [1, 4, 9])
def test_band_width_is_what_is_reported(feather: int) -> None:
    hole = _disk(48, 20, 26, 7) >= 128
    alpha = blend_alpha(hole, feather)
    dist = _distance_to(hole)
    assert np.all(alpha[hole] == 1.0)
    assert np.all(alpha[dist >= feather] == 0.0)          # beyond the band: exactly 0
    band = (dist > 0) & (dist < feather - 0.5)
    assert np.all((alpha[band] > 0) & (alpha[band] < 1))  # inside it: a blend


@pytest.mark.parametrize("feather", [4, 8, 16])
def test_the_band_has_no_seam(feather: int) -> None:
    alpha = blend_alpha(_disk(96, 48, 48, 20) >= 128, feather)
    steps = max(np.abs(np.diff(alpha, axis=0)).max(), np.abs(np.diff(alpha, axis=1)).max())
    assert steps <= 1.6 / feather      # smoothstep's slope is at most 1.5 per band width


def test_beyond_the_band_the_output_is_the_input_exactly() -> None:
    original = make_test_image(80, 64, seed=1)
    generated = Image.fromarray(255 - np.asarray(original))   # every pixel differs
    mask = _disk(80, 30, 30, 9)[:64]
    out = np.asarray(paste_back(original, generated, Image.fromarray(mask), 6)).astype(int)
    dist = _distance_to(mask >= 128)
    orig, gen = np.asarray(original).astype(int), np.asarray(generated).astype(int)
    assert np.array_equal(out[dist >= 6], orig[dist >= 6])
    assert np.array_equal(out[mask >= 128], gen[mask >= 128])
    assert (out != orig).any(axis=-1).sum() > (mask >= 128).sum()   # the band blends too


def test_empty_and_full_masks_and_sizes() -> None:
    original, generated = make_test_image(32, 32), make_test_image(32, 32, seed=5)
    empty, full = Image.new("L", (32, 32), 0), Image.new("L", (32, 32), 255)
    assert np.array_equal(np.asarray(paste_back(original, generated, empty, 4)),
                          np.asarray(original))
    assert np.array_equal(np.asarray(paste_back(original, generated, full, 4)),
                          np.asarray(generated))
    hole = np.asarray(paste_back(original, generated, Image.fromarray(_disk(32, 16, 16, 5)), 0))
    inside = _disk(32, 16, 16, 5) >= 128                     # feather 0: a hard paste
    assert np.array_equal(hole[~inside], np.asarray(original)[~inside])
    with pytest.raises(ValueError, match="sizes must match"):
        paste_back(original, make_test_image(16, 16), empty, 4)
    assert hole_of(np.array([[127, 128]], np.uint8)).tolist() == [[False, True]]
    assert default_feather(64, 64) == 4 and default_feather(4000, 6000) == 62


def test_paste_back_is_idempotent_where_it_matters() -> None:
    original, generated = make_test_image(64, 64), make_test_image(64, 64, seed=9)
    mask = Image.fromarray(_disk(64, 32, 32, 10))
    once = paste_back(original, generated, mask, 5)
    twice = np.asarray(paste_back(original, once, mask, 5))
    dist = _distance_to(_disk(64, 32, 32, 10) >= 128)
    assert np.array_equal(twice[dist == 0], np.asarray(once)[dist == 0])
    assert np.array_equal(twice[dist >= 5], np.asarray(original)[dist >= 5])


def test_jpeg_beyond_the_band_is_within_jpegs_own_error() -> None:
    original = make_test_image(128, 128, seed=2)
    generated = Image.fromarray(255 - np.asarray(original))
    mask = _disk(128, 40, 40, 12)
    out = paste_back(original, generated, Image.fromarray(mask), 6)

    def jpeg(img: Image.Image) -> np.ndarray:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(int)

    dist, truth = _distance_to(mask >= 128), np.asarray(original).astype(int)
    own = np.abs(jpeg(original) - truth)               # JPEG's own error on the input alone
    assert np.abs(jpeg(out) - truth)[dist >= 6].max() <= own.max()
    far = dist >= 6 + 23   # past every 16x16 MCU (4:2:0 chroma) that touches the band
    assert np.array_equal(jpeg(out)[far], jpeg(original)[far])


def test_crop_plan_for_a_small_mask_in_a_big_image() -> None:
    mask = np.zeros((2048, 2048), np.uint8)
    mask[1000:1290, 900:1190] = 255        # 2% of the image
    plan = plan_crop(mask, CropSettings(padding=32), feather=32)
    assert plan is not None and plan.size == (1024, 1024)
    x0, y0, x1, y1 = plan.box
    assert (x0, y0, x1, y1) == (900 - 40, 1000 - 40, 1190 + 40, 1290 + 40)   # >= band + 8
    assert plan.fraction < 0.05 and "crop: inpainting" in plan.describe()
    assert plan_crop(mask, CropSettings(crop=False), 32) is None
    assert plan_crop(mask, CropSettings(padding=-1), 32) is None
    big = np.zeros((2048, 2048), np.uint8)
    big[100:1900, 100:1900] = 255
    assert plan_crop(big, CropSettings(), 32) is None                       # box > 50%
    assert plan_crop(np.zeros((2048, 2048), np.uint8), CropSettings(), 32) is None
    thin = np.zeros((2048, 2048), np.uint8)
    thin[1000:1004, 200:1800] = 255
    tplan = plan_crop(thin, CropSettings(), 32)
    assert tplan is not None
    bw, bh = tplan.box[2] - tplan.box[0], tplan.box[3] - tplan.box[1]
    assert bw <= 2 * bh + 1 and all(s % 16 == 0 for s in tplan.size)


def test_crop_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="crop_threshold must be in"):
        CropSettings(threshold=0)
    with pytest.raises(ValueError, match="working_size must be"):
        CropSettings(working_size=8)
    with pytest.raises(ValueError, match="crop must be true or false"):
        CropSettings(crop="maybe")  # type: ignore[arg-type]
    assert working_dims(354, 354, 1024) == (1024, 1024)


def test_crop_and_stitch_round_trip_keeps_the_size_and_the_outside() -> None:
    original = make_test_image(256, 192, seed=3)
    mask = np.zeros((192, 256), np.uint8)
    mask[80:100, 100:130] = 255
    plan = plan_crop(mask, CropSettings(padding=16, working_size=64), feather=4)
    assert plan is not None
    crop, crop_mask = crop_pair(original, Image.fromarray(mask), plan)
    assert crop.size == crop_mask.size == plan.size
    out = np.asarray(stitch(original, Image.new("RGB", plan.size, "red"), plan))
    x0, y0, x1, y1 = plan.box
    outside = np.ones((192, 256), bool)
    outside[y0:y1, x0:x1] = False
    assert out.shape == (192, 256, 3)
    assert np.array_equal(out[outside], np.asarray(original)[outside])
    assert (out[y0:y1, x0:x1] == [255, 0, 0]).all()
    soft = np.asarray(stitch(original, Image.new("RGB", plan.size, "red"), plan, feather=4))
    assert np.array_equal(soft[outside], np.asarray(original)[outside])
    assert (soft[(y0 + y1) // 2, (x0 + x1) // 2] == [255, 0, 0]).all()
    assert np.array_equal(soft[y0, x0:x1], np.asarray(original)[y0, x0:x1])   # the edge: input
    assert CropPlan((0, 0, 8, 8), (16, 16), (16, 16)).info()["box"] == [0, 0, 8, 8]


def test_paste_back_options_reach_every_engine() -> None:
    engine = create_engine("null", delay=0, paste_back="false", paste_back_feather=7)
    assert engine.paste_back is False and engine.paste_back_feather == 7
    assert create_engine("null").paste_back is True
    assert create_engine("null").paste_back_feather is None
    with pytest.raises(ValueError, match="paste_back must be true or false, not 'maybe'"):
        create_engine("null", paste_back="maybe")
    with pytest.raises(ValueError, match="paste_back_feather must be a whole number"):
        create_engine("null", paste_back_feather=-3)
