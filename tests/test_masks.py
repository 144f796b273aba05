"""Mask tools: shapes, threshold, invert, grow/shrink, feather, fit to the image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb.masks import (
    MaskMismatchError,
    feather_mask,
    fit_mask,
    grow_mask,
    invert_mask,
    mask_box,
    mask_coverage,
    mask_ellipse,
    mask_polygon,
    mask_threshold,
    union_mask,
)


def arr(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask)


def test_box_is_exact_in_pixels_and_in_fractions() -> None:
    m = mask_box((40, 20), (10, 5, 20, 15))
    assert m.mode == "L" and m.size == (40, 20)
    a = arr(m)
    assert a[5:15, 10:20].min() == 255 and a.sum() == 255 * 100
    assert arr(mask_box((40, 20), (0.25, 0.25, 0.5, 0.75), relative=True)).tolist() == a.tolist()


def test_shapes_take_the_size_from_an_image(image: Image.Image) -> None:
    assert mask_ellipse(image, (0, 0, 1, 1), relative=True).size == image.size
    assert mask_box(image, (0, 0, 1, 1), relative=True).getextrema() == (255, 255)


def test_ellipse_covers_about_pi_over_four() -> None:
    assert mask_coverage(mask_ellipse((200, 200), (0, 0, 200, 200))) == pytest.approx(np.pi / 4, abs=0.01)


def test_polygon_triangle_covers_half_of_its_box() -> None:
    m = mask_polygon((100, 100), [(0, 0), (100, 0), (0, 100)])
    assert mask_coverage(m) == pytest.approx(0.5, abs=0.02)
    assert m.getpixel((5, 5)) == 255 and m.getpixel((95, 95)) == 0
    with pytest.raises(ValueError, match="at least 3 points"):
        mask_polygon((10, 10), [(0, 0), (1, 1)])


def test_threshold_on_brightness_and_on_a_channel() -> None:
    img = Image.new("RGB", (2, 1))
    img.putpixel((0, 0), (250, 10, 10))
    img.putpixel((1, 0), (240, 240, 240))
    assert arr(mask_threshold(img, 200)).ravel().tolist() == [0, 255]
    assert arr(mask_threshold(img, 200, channel="R")).ravel().tolist() == [255, 255]
    assert arr(mask_threshold(img, 200, above=False)).ravel().tolist() == [255, 0]
    with pytest.raises(ValueError, match="channel"):
        mask_threshold(img, channel="alpha")


def test_invert_and_union() -> None:
    m = mask_box((10, 10), (0, 0, 5, 10))
    assert mask_coverage(invert_mask(m)) == pytest.approx(0.5)
    assert mask_coverage(union_mask(m, invert_mask(m))) == 1.0
    with pytest.raises(MaskMismatchError, match="10x10 vs 5x5"):
        union_mask(m, Image.new("L", (5, 5)))


def test_grow_and_shrink_move_the_edge_by_the_radius() -> None:
    m = mask_box((60, 60), (20, 20, 40, 40))     # 20x20 square
    grown, shrunk = arr(grow_mask(m, 3)), arr(grow_mask(m, -3))
    assert grown[30, 17] == 255 and grown[30, 16] == 0     # 3 px out, not 4
    assert shrunk[30, 23] == 255 and shrunk[30, 22] == 0   # 3 px in
    assert arr(grow_mask(m, 0)).tolist() == arr(m).tolist()


def test_feather_softens_only_near_the_edge() -> None:
    m = mask_box((60, 60), (30, 0, 60, 60))
    f = arr(feather_mask(m, 4))
    assert 0 < f[30, 30] < 255 and f[30, 2] == 0 and f[30, 58] == 255
    with pytest.raises(ValueError, match="radius"):
        feather_mask(m, -1)


def test_fit_mask_resizes_same_aspect_and_refuses_another() -> None:
    image = Image.new("RGB", (200, 100))
    fitted = fit_mask(mask_box((100, 50), (0, 0, 50, 50)), image)
    assert fitted.size == (200, 100) and set(arr(fitted).ravel()) == {0, 255}   # still hard-edged
    with pytest.raises(MaskMismatchError) as info:
        fit_mask(Image.new("L", (100, 100)), image)
    assert "100x100" in str(info.value) and "200x100" in str(info.value)
    with pytest.raises(MaskMismatchError, match="resize=True"):
        fit_mask(Image.new("L", (100, 50)), image, resize=False)
    assert isinstance(info.value, ValueError)


def test_mask_tools_accept_any_mask_input(tmp_path) -> None:
    path = tmp_path / "m.png"
    mask_box((8, 8), (0, 0, 4, 8)).save(path)
    assert mask_coverage(str(path)) == 0.5
    assert mask_coverage(np.ones((4, 4), bool)) == 1.0


def test_mask_tools_are_public() -> None:
    for name in ("mask_box", "mask_ellipse", "mask_polygon", "mask_threshold", "invert_mask",
                 "grow_mask", "feather_mask", "fit_mask", "MaskMismatchError"):
        assert name in fluxnb.__all__ and getattr(fluxnb, name) is getattr(fluxnb.masks, name)
