"""MaskPainter: the mask is strokes rasterised in Python at the image's resolution."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb.masks import mask_box, mask_coverage
from fluxnb.widgets import MaskPainter
from tests.conftest import make_test_image


def mouse(painter: MaskPainter, event: str, x: float, y: float) -> None:
    """Deliver a mouse event the way the browser does (a comm message to the top canvas)."""
    painter.canvas[-1]._handle_frontend_event(None, {"event": event, "x": x, "y": y}, None)


def test_strokes_are_rasterised_at_the_image_resolution() -> None:
    image = make_test_image(1200, 800)
    painter = MaskPainter(image, display_size=300, widgets=False)
    assert painter.canvas_size == (300, 200) and painter.scale == 0.25
    painter.paint([(100, 400), (1100, 400)], radius=50)
    mask = painter.mask
    assert mask.mode == "L" and mask.size == (1200, 800)
    a = np.asarray(mask)
    assert a[400, 600] == 255 and a[400 - 49, 600] == 255 and a[400 - 52, 600] == 0
    assert a[400, 49] == 0 and a[400, 52] == 255                  # round cap at the start
    assert painter.coverage == pytest.approx((1000 * 100 + np.pi * 50**2) / (1200 * 800), rel=0.03)


def test_erase_invert_clear_undo() -> None:
    painter = MaskPainter(Image.new("RGB", (100, 100)), widgets=False)
    painter.paint([(50, 50)], radius=20)
    painted = painter.coverage
    painter.erase([(50, 50)], radius=5)
    assert painter.mask.getpixel((50, 50)) == 0 and painter.coverage < painted
    painter.invert()
    assert painter.mask.getpixel((50, 50)) == 255 and painter.mask.getpixel((0, 0)) == 255
    painter.clear()
    assert painter.coverage == 0.0
    assert painter.undo() and painter.mask.getpixel((0, 0)) == 255     # clear undone
    assert painter.undo() and painter.undo()
    assert painter.coverage == pytest.approx(painted)
    assert len(painter.strokes) == 1


def test_starting_mask_is_fitted_and_kept_under_the_strokes() -> None:
    image = Image.new("RGB", (200, 100))
    painter = MaskPainter(image, mask=mask_box((100, 50), (0, 0, 50, 50)), widgets=False)
    assert painter.mask.size == (200, 100) and painter.coverage == pytest.approx(0.5)
    painter.paint([(150, 50)], radius=10)
    assert painter.coverage > 0.5
    painter.set_mask(Image.new("L", (200, 100), 255))
    assert painter.coverage == 1.0 and painter.strokes == []
    with pytest.raises(fluxnb.MaskMismatchError):
        MaskPainter(image, mask=Image.new("L", (100, 100)), widgets=False)


def test_mouse_strokes_become_image_coordinates(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    image = make_test_image(800, 400)
    painter = MaskPainter(image, display_size=400, brush=20)     # canvas 400x200, scale 0.5
    assert painter.canvas.layout.width == "400px" and painter.canvas.layout.height == "200px"
    mouse(painter, "mouse_down", 50, 100)
    mouse(painter, "mouse_move", 150, 100)
    assert painter.strokes == []                               # a stroke ends on mouse up
    mouse(painter, "mouse_up", 150, 100)
    (stroke,) = painter.strokes
    assert stroke.points == ((100.0, 200.0), (300.0, 200.0)) and stroke.radius == 20
    assert painter.mask.getpixel((200, 200)) == 255 and painter.mask.getpixel((200, 250)) == 0
    painter.mode.value = "erase"
    painter.brush_slider.value = 5
    mouse(painter, "mouse_down", 100, 100)
    mouse(painter, "mouse_up", 100, 100)
    assert painter.strokes[-1].erase and painter.mask.getpixel((200, 200)) == 0
    assert "strokes" in painter.info.value and "Exception in callback" not in caplog.text


def test_buttons_undo_clear_invert() -> None:
    painter = MaskPainter(Image.new("RGB", (64, 64)))
    painter.paint([(32, 32)], radius=8)
    painter.invert_button.click()
    assert painter.mask.getpixel((0, 0)) == 255
    painter.undo_button.click()
    assert painter.mask.getpixel((0, 0)) == 0
    painter.clear_button.click()
    assert painter.coverage == 0
    assert "0 strokes" not in painter.info.value and "0.0%" in painter.info.value


def test_a_failing_tool_shows_its_error_in_the_painter() -> None:
    painter = MaskPainter(Image.new("RGB", (64, 64)))
    painter.on_change(lambda _p: 1 / 0)
    painter.invert_button.click()                      # the error would be swallowed by ipywidgets
    assert "ZeroDivisionError" in painter.info.value


def test_painter_mask_works_with_the_mask_tools() -> None:
    painter = MaskPainter(Image.new("RGB", (64, 64)), widgets=False)
    painter.paint([(10, 10), (50, 50)], radius=4)
    assert mask_coverage(fluxnb.grow_mask(painter.mask, 2)) > painter.coverage
    assert "MaskPainter(64x64, 1 strokes" in repr(painter)


def test_the_default_brush_is_sized_on_screen_not_in_image_pixels() -> None:
    photo = MaskPainter(Image.new("RGB", (6000, 4000)), widgets=False)       # canvas 512x341
    small = MaskPainter(Image.new("RGB", (512, 384)), widgets=False)         # canvas 512x384
    for painter in (photo, small):
        assert 12 <= painter.brush * painter.scale <= 18, painter.brush       # ~15 px on screen
    assert photo.brush == pytest.approx(15.36 / photo.scale, abs=1)          # ~180 image px
    assert small.brush == 15
    photo.paint([(3000, 2000)])                    # one dab with the default brush is visible
    assert photo.coverage > 0.002
    assert MaskPainter(Image.new("RGB", (64, 64)), brush=3, widgets=False).brush == 3


def test_the_brush_is_shown_its_size_and_its_outline_under_the_mouse() -> None:
    painter = MaskPainter(Image.new("RGB", (3000, 2000)), display_size=300)   # scale 0.1
    assert painter.brush == 90 and painter.brush_slider.value == 90
    assert "brush 90 px (9 px on screen)" in painter.info.value
    mouse(painter, "mouse_move", 40, 50)                 # hovering, no button down
    assert painter.cursor == (40, 50, 9.0) and painter.strokes == []
    painter.brush_slider.value = 200
    assert painter.brush == 200 and painter.cursor == (40, 50, 20.0)
    assert "brush 200 px (20 px on screen)" in painter.info.value
    mouse(painter, "mouse_out", 40, 50)
    assert painter.cursor is None
