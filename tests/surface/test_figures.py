"""The before / mask / after picture and the demo inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fluxnb.demo import demo_inputs, demo_mask
from fluxnb.figures import before_mask_after, mask_overlay

from ..conftest import make_test_image, make_test_mask


def test_overlay_tints_only_the_hole() -> None:
    image, mask = make_test_image(), make_test_mask()
    over = np.asarray(mask_overlay(image, mask)).astype(int)
    base = np.asarray(image).astype(int)
    hole = np.asarray(mask) >= 128
    assert (over[~hole] == base[~hole]).all()
    assert np.abs(over[hole] - base[hole]).mean() > 20


def test_strip_has_one_tile_per_picture_and_titles() -> None:
    image, mask = make_test_image(96, 64), make_test_mask(96, 64)
    outs = [Image.new("RGB", (96, 64), c) for c in ("red", "blue")]
    sheet = before_mask_after(image, mask, outs, height=64, gap=8, caption="seed=1")
    assert sheet.width == 4 * 96 + 5 * 8
    arr = np.asarray(sheet)
    # the last tile is pure blue, the one before it pure red
    row = arr[sheet.height // 2]
    assert tuple(row[8 + 3 * (96 + 8) + 48]) == (0, 0, 255)
    assert tuple(row[8 + 2 * (96 + 8) + 48]) == (255, 0, 0)
    with pytest.raises(ValueError, match="expected 4"):
        before_mask_after(image, mask, outs, titles=["a", "b"])


def test_demo_inputs_ship_with_a_dependency() -> None:
    image, mask = demo_inputs()
    assert image.mode == "RGB" and mask.mode == "L" and image.size == mask.size == (512, 600)
    coverage = (np.asarray(mask) >= 128).mean()
    assert 0.01 < coverage < 0.1
    assert demo_mask((100, 50)).size == (100, 50)
