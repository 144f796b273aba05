"""A before/after swipe comparison: two images stacked, a divider you drag with the mouse.

:class:`SwipeView` is an anywidget: the divider moves in the browser with no round trip to the
kernel, and its ``position`` (0..1, the share of the width that shows ``before``) syncs back to
Python, where it can also be set. Images travel at display size (``width``, 512 px by default),
never full size. :func:`compare` (``fluxnb.compare``) builds one from any two images or results;
its notebook output also carries a static side-by-side PNG for nbconvert and GitHub.

>>> from PIL import Image
>>> view = compare(Image.new("RGB", (1024, 1024), "red"), Image.new("RGB", (1024, 1024), "blue"))
>>> view.display_size, view.labels
((512, 512), ('before', 'after'))
>>> view.position = 2.0                     # clamped to 0..1
>>> view.position
1.0
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import anywidget
import traitlets
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..images import load_image

__all__ = ["DEFAULT_WIDTH", "SwipeView", "compare", "side_by_side"]

#: display width in CSS pixels when ``width`` is not given (images are never upscaled)
DEFAULT_WIDTH = 512
_MAX_WIDTH = 4096
_JPEG_QUALITY = 88
#: at most this many colours in both images: sent as PNG (masks, diagrams, flat fills)
_FLAT_COLOURS = 1024
_BACKGROUND, _TEXT = (255, 255, 255), (30, 30, 30)

_ESM = """
function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "fluxnb-swipe";
  root.tabIndex = 0;
  root.setAttribute("role", "slider");
  root.setAttribute("aria-valuemin", "0");
  root.setAttribute("aria-valuemax", "1");
  const before = document.createElement("img");
  const after = document.createElement("img");
  before.className = "fluxnb-swipe-before";
  after.className = "fluxnb-swipe-after";
  for (const img of [before, after]) { img.draggable = false; img.alt = ""; }
  const divider = document.createElement("div");
  divider.className = "fluxnb-swipe-divider";
  divider.appendChild(document.createElement("span"));
  const left = document.createElement("span");
  const right = document.createElement("span");
  left.className = "fluxnb-swipe-label fluxnb-swipe-label-before";
  right.className = "fluxnb-swipe-label fluxnb-swipe-label-after";
  root.append(before, after, divider, left, right);
  el.appendChild(root);
  let urls = [];
  function images() {
    urls.forEach((u) => URL.revokeObjectURL(u));
    const mime = model.get("_mime");
    urls = ["_before", "_after"].map((k) => URL.createObjectURL(new Blob([model.get(k)], { type: mime })));
    before.src = urls[0];
    after.src = urls[1];
  }
  function size() {
    const [w, h] = model.get("_size");
    root.style.width = w + "px";
    root.style.height = h + "px";
  }
  function labels() {
    const [a, b] = model.get("labels");
    left.textContent = a;
    right.textContent = b;
    before.alt = a;
    after.alt = b;
  }
  function place() {
    const p = model.get("position");
    after.style.clipPath = "inset(0 0 0 " + (p * 100) + "%)";
    divider.style.left = (p * 100) + "%";
    root.setAttribute("aria-valuenow", String(p));
  }
  function set(p) {
    model.set("position", Math.min(1, Math.max(0, p)));
    model.save_changes();
  }
  function at(e) {
    const r = root.getBoundingClientRect();
    return r.width > 0 ? (e.clientX - r.left) / r.width : 0.5;
  }
  let dragging = false;
  root.addEventListener("pointerdown", (e) => {
    dragging = true;
    root.setPointerCapture(e.pointerId);
    root.focus();
    set(at(e));
    e.preventDefault();
  });
  root.addEventListener("pointermove", (e) => { if (dragging) set(at(e)); });
  const stop = () => { dragging = false; };
  root.addEventListener("pointerup", stop);
  root.addEventListener("pointercancel", stop);
  root.addEventListener("keydown", (e) => {
    const step = e.shiftKey ? 0.1 : 0.02;
    if (e.key === "ArrowLeft") set(model.get("position") - step);
    else if (e.key === "ArrowRight") set(model.get("position") + step);
    else return;
    e.preventDefault();
    e.stopPropagation();
  });
  model.on("change:position", place);
  model.on("change:labels", labels);
  model.on("change:_size", size);
  model.on("change:_before", images);
  model.on("change:_after", images);
  size(); labels(); images(); place();
  return () => urls.forEach((u) => URL.revokeObjectURL(u));
}
export default { render };
"""

_CSS = """
.fluxnb-swipe { position: relative; overflow: hidden; cursor: ew-resize; user-select: none;
  touch-action: none; outline: none; background: #eee; }
.fluxnb-swipe:focus-visible { box-shadow: 0 0 0 2px #4a90d9; }
.fluxnb-swipe img { position: absolute; inset: 0; width: 100%; height: 100%; display: block;
  pointer-events: none; }
.fluxnb-swipe-divider { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px;
  background: #fff; box-shadow: 0 0 3px rgba(0,0,0,.6); pointer-events: none; }
.fluxnb-swipe-divider span { position: absolute; top: 50%; left: 50%; width: 18px; height: 18px;
  margin: -11px 0 0 -11px; border: 2px solid #fff; border-radius: 50%; background: rgba(0,0,0,.35); }
.fluxnb-swipe-label { position: absolute; top: 6px; padding: 1px 6px; border-radius: 3px;
  font: 12px sans-serif; color: #fff; background: rgba(0,0,0,.55); pointer-events: none; }
.fluxnb-swipe-label-before { left: 6px; }
.fluxnb-swipe-label-after { right: 6px; }
"""


def _as_image(obj: Any, what: str) -> Image.Image:
    """A PIL image from an image input or a fluxnb result (its first output image)."""
    if obj is None:
        raise TypeError(f"{what} is None: pass a PIL image, a path, encoded bytes or a fluxnb result")
    pil_images = getattr(obj, "pil_images", None)
    if callable(pil_images) and not isinstance(obj, Image.Image):
        images = pil_images()
        if not images:
            raise ValueError(f"{what} is a result with no output images: nothing to compare")
        return load_image(images[0])
    return load_image(obj)


def _labels(labels: Any) -> tuple[str, str]:
    if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) != 2:
        raise ValueError(f"labels must be two strings, e.g. ('before', 'after'), not {labels!r}")
    return str(labels[0]), str(labels[1])


def _display_width(width: int | None) -> int:
    if width is None:
        return DEFAULT_WIDTH
    if isinstance(width, bool) or not isinstance(width, int) or not 16 <= width <= _MAX_WIDTH:
        raise ValueError(f"width must be an int from 16 to {_MAX_WIDTH} (pixels), not {width!r}")
    return width


def _fit_pair(before: Image.Image, after: Image.Image, width: int) -> tuple[Image.Image, Image.Image]:
    """Both images at ``before``'s aspect, at most ``width`` wide (never upscaled); an ``after``
    of another aspect is letterboxed, not stretched."""
    w = min(width, before.width)
    size = (w, max(1, round(before.height * w / before.width)))
    b = before if before.size == size else before.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if after.width * size[1] == after.height * size[0]:
        a = after if after.size == size else after.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    else:
        a = ImageOps.pad(after, size, Image.Resampling.LANCZOS, color=(238, 238, 238))
    return b, a


def _encode(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "PNG":
        img.save(out, format="PNG", compress_level=6)
    else:
        img.save(out, format="JPEG", quality=_JPEG_QUALITY)
    return out.getvalue()


def _encode_pair(before: Image.Image, after: Image.Image) -> tuple[bytes, bytes, str]:
    """Both images in one format: PNG for flat, synthetic pictures (few colours: lossless and
    small), JPEG for photographs. Returns ``(before, after, mime)``."""
    flat = all(img.getcolors(maxcolors=_FLAT_COLOURS) is not None for img in (before, after))
    fmt = "PNG" if flat else "JPEG"
    return _encode(before, fmt), _encode(after, fmt), f"image/{fmt.lower()}"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def side_by_side(before: Image.Image, after: Image.Image, labels: Sequence[str] = ("before", "after"),
                 *, tile_width: int = 320, gap: int = 10) -> Image.Image:
    """One RGB picture: ``before`` and ``after`` side by side, each titled (the static fallback).

    >>> from PIL import Image
    >>> side_by_side(Image.new("RGB", (64, 32)), Image.new("RGB", (64, 32))).size
    (158, 74)
    """
    w = min(tile_width, before.width)
    b, a = _fit_pair(before, after, w)
    font_size = max(12, min(20, b.height // 12))
    title_h = font_size + gap
    sheet = Image.new("RGB", (2 * b.width + 3 * gap, b.height + title_h + 2 * gap), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(font_size)
    for i, (tile, name) in enumerate(zip((b, a), _labels(labels), strict=True)):
        x = gap + i * (b.width + gap)
        draw.text((x + tile.width / 2, gap + font_size / 2), name, fill=_TEXT, font=font, anchor="mm")
        sheet.paste(tile, (x, gap + title_h))
    return sheet


class SwipeView(anywidget.AnyWidget):
    """Before/after swipe comparison: drag the divider (or use the arrow keys) in the browser.

    ``before``/``after``: PIL images, paths, encoded bytes, arrays or fluxnb results (their first
    output). ``width``: display width in pixels (default 512; never upscaled); the images are
    sent at that size. ``position`` (0..1) is the divider: the share of the width showing
    ``before``; the browser's drags sync it back, and setting it moves the divider.

    >>> from PIL import Image
    >>> view = SwipeView(Image.new("RGB", (800, 400), "red"), Image.new("RGB", (800, 400), "blue"),
    ...                  labels=("input", "output"), width=400)
    >>> view.display_size, view.payload_bytes < 5000
    ((400, 200), True)
    """

    _esm = _ESM
    _css = _CSS

    position = traitlets.Float(0.5, help="the divider: 0 = all after, 1 = all before").tag(sync=True)
    labels = traitlets.Tuple(traitlets.Unicode(), traitlets.Unicode(),
                             default_value=("before", "after")).tag(sync=True)
    _before = traitlets.Bytes(b"").tag(sync=True)
    _after = traitlets.Bytes(b"").tag(sync=True)
    _mime = traitlets.Unicode("image/png").tag(sync=True)
    _size = traitlets.Tuple(traitlets.Int(), traitlets.Int(), default_value=(1, 1)).tag(sync=True)

    def __init__(self, before: Any, after: Any, *, labels: Sequence[str] = ("before", "after"),
                 width: int | None = None, position: float = 0.5) -> None:
        super().__init__()
        self._width = _display_width(width)
        self._shown: tuple[Image.Image, Image.Image] | None = None
        #: bytes of the two encoded images the last :meth:`set_images` sent
        self.payload_bytes = 0
        self.position = position
        self.set_images(before, after, _labels(labels))

    @traitlets.validate("position")
    def _clamp(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if math.isnan(value):
            raise traitlets.TraitError("position must be a number from 0 to 1, not nan")
        return min(1.0, max(0.0, value))

    @property
    def display_size(self) -> tuple[int, int]:
        """``(width, height)`` of the images as sent and shown."""
        return self._size[0], self._size[1]

    def set_images(self, before: Any, after: Any, labels: Sequence[str] | None = None) -> None:
        """Show a new pair (downscaled to the display width); ``labels`` None keeps the current ones.

        The divider stays where it is, so flipping through pairs compares the same spot."""
        b, a = _fit_pair(_as_image(before, "before"), _as_image(after, "after"), self._width)
        new_labels = self.labels if labels is None else _labels(labels)
        b_bytes, a_bytes, mime = _encode_pair(b, a)
        self._shown = (b, a)
        self.payload_bytes = len(b_bytes) + len(a_bytes)
        with self.hold_sync():
            self.labels = new_labels
            self._size = b.size
            self._mime = mime
            self._before, self._after = b_bytes, a_bytes

    def static_image(self) -> Image.Image:
        """The current pair side by side with its labels, as one PIL image."""
        assert self._shown is not None
        return side_by_side(*self._shown, self.labels)

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The widget view plus a static ``image/png`` for renderers without widgets."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        png = io.BytesIO()
        self.static_image().save(png, format="PNG")
        return {**data, "image/png": base64.b64encode(png.getvalue()).decode("ascii")}, metadata


def compare(a: Any, b: Any, labels: Sequence[str] = ("before", "after"), *,
            width: int | None = None) -> SwipeView:
    """A swipe comparison of any two images or results, e.g. the input and a job's output.

    ``a`` is shown left of the divider, ``b`` right of it. Each is a PIL image, a path, encoded
    bytes, an array or a fluxnb result (its first output image). In JupyterLab it is a widget
    (drag the divider); nbconvert and GitHub show a static side-by-side picture instead.

    >>> import fluxnb
    >>> from PIL import Image
    >>> view = fluxnb.compare(Image.new("RGB", (64, 64), "gray"), Image.new("RGB", (64, 64), "white"),
    ...                       labels=("input", "steps=28"))
    >>> view.labels, round(view.position, 2)
    (('input', 'steps=28'), 0.5)
    >>> view.set_images(Image.new("RGB", (64, 64)), Image.new("RGB", (64, 64)), ("a", "b"))
    """
    return SwipeView(a, b, labels=labels, width=width)
