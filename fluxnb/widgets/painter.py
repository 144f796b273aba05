"""``MaskPainter``: paint an inpainting mask over the image with the mouse (ipycanvas).

The authoritative mask lives in Python: a list of operations (brush strokes in *image*
coordinates, erase strokes, invert, clear) rasterised with PIL at the image's resolution. The
canvas only shows it. So the mask is deterministic, undo is exact, and everything can be driven
(and tested) without a browser:

>>> from PIL import Image
>>> painter = MaskPainter(Image.new("RGB", (200, 100)), widgets=False)
>>> painter.paint([(20, 50), (80, 50)], radius=10)
>>> painter.mask.size, painter.mask.getpixel((50, 50)), painter.mask.getpixel((150, 50))
((200, 100), 255, 0)
>>> painter.invert(); painter.mask.getpixel((150, 50))
255
>>> painter.undo(), painter.undo(), painter.undo(), painter.coverage
(True, True, False, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from ..images import load_image, load_mask
from ..masks import fit_mask, mask_coverage

__all__ = ["MaskPainter", "Stroke"]

#: Colour of painted pixels on the canvas (RGBA); the mask itself is white on black.
_PAINT_RGBA = (255, 0, 72, 130)
#: The default brush radius as a fraction of the canvas's longest side on screen (at least
#: ``_MIN_SCREEN_BRUSH`` screen pixels), converted to image pixels: the same size on screen
#: for a 512 px image and a 6000x4000 photo.
_SCREEN_BRUSH = 0.03
_MIN_SCREEN_BRUSH = 4.0


@dataclass(frozen=True)
class Stroke:
    """One brush stroke: points in image pixels, a radius in image pixels, paint or erase."""

    points: tuple[tuple[float, float], ...]
    radius: float
    erase: bool = False

    def draw(self, draw: ImageDraw.ImageDraw) -> None:
        fill = 0 if self.erase else 255
        r = self.radius
        for x, y in self.points:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        if len(self.points) > 1:
            draw.line(list(self.points), fill=fill, width=max(1, int(round(2 * r))))


# operations other than strokes
_INVERT = "invert"
_CLEAR = "clear"


class MaskPainter:
    """Paint a mask over ``image``; ``painter.mask`` is the mask (mode ``L``, the image's size).

    ``mask`` is an optional starting mask (resized to the image when the aspect ratio matches).
    ``display_size`` is the longest side of the canvas on screen; strokes are kept in image
    pixels whatever the zoom. ``brush`` is the brush radius in image pixels; by default it is
    3% of the canvas on screen (about 15 screen pixels), whatever the image's resolution; the
    canvas shows its outline under the mouse. Paint with the mouse, or with :meth:`paint` /
    :meth:`erase` in code; :meth:`undo`, :meth:`clear` and :meth:`invert` work both ways.
    ``widgets=False`` builds no widgets (scripts, tests).

    >>> painter = MaskPainter(image)           # doctest: +SKIP
    >>> painter                                # shows the canvas and its tools   # doctest: +SKIP
    >>> client.run(prompt=..., image_url=image, mask_url=painter.mask)  # doctest: +SKIP
    """

    def __init__(self, image: Any, mask: Any = None, *, brush: float | None = None,
                 display_size: int = 512, widgets: bool = True):
        self.image = load_image(image)
        self._base = (Image.new("L", self.image.size, 0) if mask is None
                      else fit_mask(load_mask(mask), self.image))
        self._ops: list[Stroke | str] = []
        self._current: list[tuple[float, float]] | None = None
        self.erasing = False
        longest = max(self.image.size)
        self.scale = min(1.0, display_size / longest)   # canvas px per image px
        self.canvas_size = (max(1, round(self.image.width * self.scale)),
                            max(1, round(self.image.height * self.scale)))
        on_screen = max(_MIN_SCREEN_BRUSH, _SCREEN_BRUSH * max(self.canvas_size))
        self.brush = float(brush) if brush is not None else float(max(1, round(on_screen / self.scale)))
        #: The brush outline under the mouse: ``(x, y, radius)`` in canvas pixels, or None.
        self.cursor: tuple[float, float, float] | None = None
        self._on_change: list[Any] = []
        self.widget: Any = None
        if widgets:
            self._build_widgets()

    # -- the mask (pure Python) --------------------------------------------------------------

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    @property
    def strokes(self) -> list[Stroke]:
        """The brush strokes so far (paint and erase), oldest first."""
        return [op for op in self._ops if isinstance(op, Stroke)]

    @property
    def mask(self) -> Image.Image:
        """The mask as a mode-``L`` PIL image at the image's resolution (white = repaint)."""
        mask = self._base.copy()
        draw = ImageDraw.Draw(mask)
        for op in self._ops:
            if isinstance(op, Stroke):
                op.draw(draw)
            elif op == _INVERT:
                mask = ImageChops.invert(mask)
                draw = ImageDraw.Draw(mask)
            elif op == _CLEAR:
                mask = Image.new("L", self.image.size, 0)
                draw = ImageDraw.Draw(mask)
        return mask

    @property
    def coverage(self) -> float:
        """The fraction of the image that will be repainted."""
        return mask_coverage(self.mask)

    def _points(self, points: Sequence[Sequence[float]]) -> tuple[tuple[float, float], ...]:
        out = tuple((float(p[0]), float(p[1])) for p in points)
        if not out:
            raise ValueError("a stroke needs at least one point")
        return out

    def paint(self, points: Sequence[Sequence[float]], radius: float | None = None) -> None:
        """Paint (repaint area) along ``points`` ``[(x, y), ...]`` in image pixels."""
        self._apply(Stroke(self._points(points), float(radius if radius is not None else self.brush)))

    def erase(self, points: Sequence[Sequence[float]], radius: float | None = None) -> None:
        """Erase (keep area) along ``points`` in image pixels."""
        self._apply(Stroke(self._points(points), float(radius if radius is not None else self.brush),
                           erase=True))

    def invert(self) -> None:
        """Swap painted and unpainted areas (undoable)."""
        self._apply(_INVERT)

    def clear(self) -> None:
        """Remove the whole mask, including a starting mask (undoable)."""
        self._apply(_CLEAR)

    def undo(self) -> bool:
        """Undo the last operation; False when there is nothing to undo."""
        if not self._ops:
            return False
        self._ops.pop()
        self._changed()
        return True

    def set_mask(self, mask: Any) -> None:
        """Start over from ``mask`` (any mask input; resized to the image); clears the history."""
        self._base = fit_mask(load_mask(mask), self.image)
        self._ops.clear()
        self._changed()

    def on_change(self, callback: Any) -> None:
        """Call ``callback(painter)`` after every change of the mask."""
        self._on_change.append(callback)

    def _apply(self, op: Stroke | str) -> None:
        self._ops.append(op)
        self._changed()

    def _changed(self) -> None:
        self._redraw()
        for callback in list(self._on_change):
            callback(self)

    def __repr__(self) -> str:
        w, h = self.image.size
        return (f"MaskPainter({w}x{h}, {len(self.strokes)} strokes, "
                f"coverage={self.coverage:.1%})")

    # -- widgets ----------------------------------------------------------------------------

    def _build_widgets(self) -> None:
        import ipywidgets as W
        from ipycanvas import MultiCanvas, hold_canvas

        self._hold = hold_canvas
        cw, ch = self.canvas_size
        # a fixed pixel layout: in a VBox the canvas would otherwise be stretched to the width;
        # layers: the image, the mask, the brush outline (on top, it gets the mouse events)
        self.canvas = MultiCanvas(3, width=cw, height=ch,
                                  layout=W.Layout(width=f"{cw}px", height=f"{ch}px"))
        self.brush_slider = W.IntSlider(value=round(self.brush), min=1,
                                        max=max(2, max(self.size) // 4, round(self.brush)),
                                        description="Brush (px)", continuous_update=False,
                                        tooltip="brush radius in image pixels")
        self.mode = W.ToggleButtons(options=["paint", "erase"], value="paint",
                                    style={"button_width": "70px"})
        self.clear_button = W.Button(description="Clear", icon="trash")
        self.undo_button = W.Button(description="Undo", icon="undo")
        self.invert_button = W.Button(description="Invert", icon="adjust")
        self.info = W.HTML()
        self.brush_slider.observe(lambda ch_: self._safe(self._set_brush, ch_["new"]), names="value")
        self.mode.observe(lambda ch_: setattr(self, "erasing", ch_["new"] == "erase"), names="value")
        self.clear_button.on_click(lambda _b: self._safe(self.clear))
        self.undo_button.on_click(lambda _b: self._safe(self.undo))
        self.invert_button.on_click(lambda _b: self._safe(self.invert))
        top = self.canvas[2]
        top.on_mouse_down(lambda x, y: self._safe(self._mouse_down, x, y))
        top.on_mouse_move(lambda x, y: self._safe(self._mouse_move, x, y))
        top.on_mouse_up(lambda x, y: self._safe(self._mouse_up, x, y))
        top.on_mouse_out(lambda x, y: self._safe(self._mouse_out, x, y))
        shown = self.image.resize(self.canvas_size, Image.Resampling.LANCZOS)
        self.canvas[0].put_image_data(np.asarray(shown), 0, 0)
        self.widget = W.VBox([
            W.HBox([self.brush_slider, self.mode]),
            W.HBox([self.undo_button, self.clear_button, self.invert_button, self.info]),
            self.canvas,
        ])
        self._redraw()

    def _safe(self, fn: Any, *args: Any) -> None:
        """Run a widget callback; show an error in the painter instead of losing it."""
        try:
            fn(*args)
        except Exception as exc:  # ipywidgets would swallow it: show it
            if self.widget is not None:
                import html

                self.info.value = f"<span style='color:#c00'>{html.escape(repr(exc))}</span>"
            else:  # pragma: no cover - no widgets, no callbacks
                raise

    def _to_image(self, x: float, y: float) -> tuple[float, float]:
        return x / self.scale, y / self.scale

    def _set_brush(self, radius: float) -> None:
        self.brush = float(radius)
        if self.cursor is not None:
            self._draw_cursor(self.cursor[0], self.cursor[1])
        self._show_info()

    def _draw_cursor(self, x: float, y: float) -> None:
        """The brush's outline at the mouse, its real size on screen."""
        r = max(1.0, self.brush * self.scale)
        self.cursor = (x, y, r)
        layer = self.canvas[2]
        with self._hold():
            layer.clear()
            layer.line_width = 1
            layer.stroke_style = "rgba(0,0,0,0.8)"
            layer.stroke_circle(x, y, r + 1)
            layer.stroke_style = "rgba(255,255,255,0.9)"
            layer.stroke_circle(x, y, r)

    def _mouse_out(self, x: float, y: float) -> None:
        self.cursor = None
        self.canvas[2].clear()
        self._mouse_up(x, y)

    def _mouse_down(self, x: float, y: float) -> None:
        self._current = [self._to_image(x, y)]
        self._draw_dab(x, y, None)

    def _mouse_move(self, x: float, y: float) -> None:
        self._draw_cursor(x, y)
        if self._current is None:
            return
        px, py = self._current[-1]
        self._current.append(self._to_image(x, y))
        self._draw_dab(x, y, (px * self.scale, py * self.scale))

    def _mouse_up(self, x: float, y: float) -> None:
        if self._current is None:
            return
        points, self._current = self._current, None
        (self.erase if self.erasing else self.paint)(points)

    def _draw_dab(self, x: float, y: float, previous: tuple[float, float] | None) -> None:
        """Instant feedback while dragging; the layer is redrawn from the mask on mouse up."""
        layer = self.canvas[1]
        r = max(1.0, self.brush * self.scale)
        with self._hold():
            if self.erasing:
                layer.clear_rect(x - r, y - r, 2 * r, 2 * r)
            else:
                layer.fill_style = "rgba({},{},{},{})".format(*_PAINT_RGBA[:3], _PAINT_RGBA[3] / 255)
                layer.fill_circle(x, y, r)
                if previous is not None:
                    layer.stroke_style = layer.fill_style
                    layer.line_width = 2 * r
                    layer.stroke_line(previous[0], previous[1], x, y)

    def _redraw(self) -> None:
        if self.widget is None:
            return
        small = self.mask.resize(self.canvas_size, Image.Resampling.BILINEAR)
        alpha = (np.asarray(small, np.float32) / 255.0 * _PAINT_RGBA[3]).astype(np.uint8)
        rgba = np.zeros((*alpha.shape, 4), np.uint8)
        rgba[..., 0], rgba[..., 1], rgba[..., 2] = _PAINT_RGBA[:3]
        rgba[..., 3] = alpha
        layer = self.canvas[1]
        with self._hold():
            layer.clear()
            layer.put_image_data(rgba, 0, 0)
        self._show_info()

    def _show_info(self) -> None:
        if self.widget is None:
            return
        self.info.value = (f"brush {self.brush:.0f} px ({self.brush * self.scale:.0f} px on screen) · "
                           f"{len(self.strokes)} strokes · {self.coverage:.1%} of the image "
                           f"will be repainted")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        if self.widget is None:
            return {"text/plain": repr(self)}
        return self.widget._repr_mimebundle_(**kwargs)
