"""Mask tools: make, combine and fix inpainting masks (mode ``L``; white = repaint, black = keep).

Pure PIL + numpy, so they work in scripts, tests and notebooks alike. Shapes take the mask size
(``(width, height)`` or an image to copy the size from) and coordinates in pixels, or fractions of
the size with ``relative=True``.

>>> m = mask_box((64, 48), (8, 8, 24, 24))
>>> m.mode, m.size, mask_coverage(m)
('L', (64, 48), 0.083...)
>>> mask_coverage(invert_mask(m))
0.916...
>>> grown = grow_mask(m, 4); mask_coverage(grown) > mask_coverage(m)
True
>>> fit_mask(m, Image.new("RGB", (128, 96))).size
(128, 96)
>>> mask_is_empty(Image.new("L", (8, 8)))
True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from .errors import MaskMismatchError, ValidationError
from .images import image_size_of, load_image, load_mask
from .schema import MASK_ASPECT_TOLERANCE, MASK_THRESHOLD

__all__ = [
    "MaskMismatchError",
    "aspect_mismatch",
    "check_mask",
    "empty_mask_reason",
    "feather_mask",
    "fit_mask",
    "grow_mask",
    "invert_mask",
    "mask_box",
    "mask_coverage",
    "mask_ellipse",
    "mask_is_empty",
    "mask_polygon",
    "mask_threshold",
    "union_mask",
]

Size = tuple[int, int]

log = logging.getLogger("fluxnb.masks")


def _size(size_or_image: Any) -> Size:
    if isinstance(size_or_image, Image.Image):
        return size_or_image.size
    if hasattr(size_or_image, "size") and isinstance(size_or_image.size, tuple):  # a MaskPainter
        w, h = size_or_image.size
        return int(w), int(h)
    try:
        w, h = size_or_image
    except (TypeError, ValueError):
        raise TypeError(f"size must be (width, height) or an image, not {size_or_image!r}") from None
    if int(w) < 1 or int(h) < 1:
        raise ValueError(f"size must be positive, not {size_or_image!r}")
    return int(w), int(h)


def _points(values: Sequence[float], size: Size, relative: bool) -> list[float]:
    if not relative:
        return [float(v) for v in values]
    w, h = size
    return [float(v) * (w if i % 2 == 0 else h) for i, v in enumerate(values)]


def mask_box(size: Any, box: Sequence[float], *, relative: bool = False) -> Image.Image:
    """A mask with a white rectangle ``box = (x0, y0, x1, y1)`` (x1, y1 exclusive).

    >>> mask_box((10, 10), (0, 0, 0.5, 1.0), relative=True).getpixel((7, 5))
    0
    """
    return _filled_box(size, box, relative, "rectangle")


def mask_ellipse(size: Any, box: Sequence[float], *, relative: bool = False) -> Image.Image:
    """A mask with a white ellipse inscribed in ``box = (x0, y0, x1, y1)``.

    >>> mask_ellipse((20, 20), (0, 0, 20, 20)).getpixel((10, 10)), mask_ellipse((20, 20), (0, 0, 20, 20)).getpixel((0, 0))
    (255, 0)
    """  # noqa: E501
    return _filled_box(size, box, relative, "ellipse")


def _filled_box(size: Any, box: Sequence[float], relative: bool, shape: str) -> Image.Image:
    """A black mask with ``shape`` (an ImageDraw method: rectangle, ellipse) filled white in
    ``box``; x1 and y1 are exclusive."""
    wh = _size(size)
    x0, y0, x1, y1 = _points(box, wh, relative)
    mask = Image.new("L", wh, 0)
    if x1 > x0 and y1 > y0:
        getattr(ImageDraw.Draw(mask), shape)((x0, y0, x1 - 1, y1 - 1), fill=255)
    return mask


def mask_polygon(size: Any, points: Sequence[tuple[float, float]], *, relative: bool = False
                 ) -> Image.Image:
    """A mask with a white polygon through ``points`` ``[(x, y), ...]`` (at least 3).

    >>> mask_polygon((10, 10), [(0, 0), (9, 0), (0, 9)]).getpixel((1, 1))
    255
    """
    wh = _size(size)
    if len(points) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(points)}")
    flat = _points([c for p in points for c in p], wh, relative)
    mask = Image.new("L", wh, 0)
    ImageDraw.Draw(mask).polygon(flat, fill=255)
    return mask


def mask_threshold(image: Any, threshold: float = 128, *, above: bool = True,
                   channel: str | None = None) -> Image.Image:
    """White where the image's brightness (or one ``channel`` of ``"R"``, ``"G"``, ``"B"``) is
    ``>= threshold`` (``above=False``: ``< threshold``). Handy for masking a bright sky or a
    white background.

    >>> img = Image.new("L", (4, 1)); img.putdata([0, 100, 200, 255])
    >>> np.asarray(mask_threshold(img, 150)).tolist()
    [[0, 0, 255, 255]]
    """
    rgb = load_image(image)
    if channel is None:
        arr = np.asarray(rgb.convert("L"))
    else:
        if channel.upper() not in ("R", "G", "B"):
            raise ValueError(f"channel={channel!r} must be 'R', 'G', 'B' or None")
        arr = np.asarray(rgb.getchannel(channel.upper()))
    hit = arr >= threshold if above else arr < threshold
    return Image.fromarray(np.where(hit, 255, 0).astype(np.uint8), "L")


def invert_mask(mask: Any) -> Image.Image:
    """Swap repaint and keep.

    >>> invert_mask(Image.new("L", (2, 2), 0)).getpixel((0, 0))
    255
    """
    return ImageChops.invert(load_mask(mask))


def union_mask(*masks: Any) -> Image.Image:
    """The pixel-wise maximum of several masks of the same size (paint everything any of them paints).

    >>> union_mask(mask_box((4, 1), (0, 0, 1, 1)), mask_box((4, 1), (3, 0, 4, 1))).getpixel((3, 0))
    255
    """
    if not masks:
        raise ValueError("union_mask needs at least one mask")
    loaded = [load_mask(m) for m in masks]
    out = loaded[0]
    for other in loaded[1:]:
        if other.size != out.size:
            raise MaskMismatchError(f"masks differ in size: {out.size[0]}x{out.size[1]} vs "
                                    f"{other.size[0]}x{other.size[1]}")
        out = ImageChops.lighter(out, other)
    return out


def _disc(radius: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    disc: np.ndarray[Any, np.dtype[np.uint8]] = (x * x + y * y <= radius * radius).astype(np.uint8)
    return disc


def grow_mask(mask: Any, pixels: int) -> Image.Image:
    """Grow the white area by ``pixels`` (a round brush); a negative value shrinks it.

    >>> m = mask_box((20, 20), (8, 8, 12, 12))
    >>> mask_coverage(grow_mask(m, 2)) > mask_coverage(m) > mask_coverage(grow_mask(m, -1))
    True
    """
    loaded = load_mask(mask)
    radius = int(round(pixels))
    if radius == 0:
        return loaded.copy()
    import cv2  # a dependency of the local server's preview engine; imported only here

    arr = np.asarray(loaded)
    kernel = _disc(abs(radius))
    out = cv2.dilate(arr, kernel) if radius > 0 else cv2.erode(arr, kernel, borderValue=0)
    return Image.fromarray(np.asarray(out, np.uint8), "L")


def feather_mask(mask: Any, radius: float) -> Image.Image:
    """Soften the mask's edge with a Gaussian blur of ``radius`` pixels (0 = unchanged).

    >>> edge = feather_mask(mask_box((20, 20), (10, 0, 20, 20)), 3).getpixel((10, 10))
    >>> 0 < edge < 255
    True
    """
    if radius < 0:
        raise ValueError(f"radius={radius!r} must be >= 0")
    loaded = load_mask(mask)
    return loaded.copy() if radius == 0 else loaded.filter(ImageFilter.GaussianBlur(radius))


def aspect_mismatch(mask_size: Size, image_size: Size, *,
                    tolerance: float = MASK_ASPECT_TOLERANCE) -> str | None:
    """Why a mask of ``mask_size`` cannot be resized to ``image_size`` (another aspect ratio),
    or None when it can: the aspect ratios agree within ``tolerance`` (relative), or within the
    rounding of one pixel (a mask painted on a thumbnail).

    >>> aspect_mismatch((300, 256), (600, 512)) is None, aspect_mismatch((10, 7), (96, 64)) is None
    (True, True)
    >>> aspect_mismatch((600, 512), (512, 600))[:60]
    'the mask is 600x512 (aspect 1.172) but the image is 512x600 '
    """
    (mw, mh), (iw, ih) = mask_size, image_size
    mask_aspect, image_aspect = mw / mh, iw / ih
    if (abs(mask_aspect / image_aspect - 1) <= tolerance or abs(mw * ih / iw - mh) < 1
            or abs(mh * iw / ih - mw) < 1):
        return None
    return (f"the mask is {mw}x{mh} (aspect {mask_aspect:.3f}) but the image is {iw}x{ih} "
            f"(aspect {image_aspect:.3f}): they do not cover the same picture. Make the mask at "
            f"the image's size, e.g. fluxnb.mask_box(image, ...), or crop one of them.")


def fit_mask(mask: Any, image: Any, *, resize: bool = True,
             tolerance: float = MASK_ASPECT_TOLERANCE) -> Image.Image:
    """The mask at the image's size (``image``: an image input or ``(width, height)``), or
    :class:`MaskMismatchError` when they disagree.

    A mask of the same aspect ratio (see :func:`aspect_mismatch`) is resized (nearest
    neighbour, so it stays hard-edged where it was) and an INFO line is logged on
    ``fluxnb.masks``; a different aspect ratio is an error, as is any size difference with
    ``resize=False``.

    >>> fit_mask(Image.new("L", (10, 10)), Image.new("RGB", (20, 10)))
    Traceback (most recent call last):
    ...
    fluxnb.errors.MaskMismatchError: the mask is 10x10 (aspect 1.000) but the image is 20x10 ...
    """
    loaded = load_mask(mask)
    if isinstance(image, (tuple, list, Image.Image)):
        wh = _size(image)
    else:
        wh = image_size_of(image) or load_image(image).size
    if loaded.size == wh:
        return loaded
    mw, mh = loaded.size
    iw, ih = wh
    problem = aspect_mismatch(loaded.size, wh, tolerance=tolerance)
    if problem is not None:
        raise MaskMismatchError(problem)
    if not resize:
        raise MaskMismatchError(f"the mask is {mw}x{mh} but the image is {iw}x{ih} "
                                f"(pass resize=True to scale the mask)")
    log.info("mask resized from %dx%d to the image's %dx%d (same aspect ratio, nearest neighbour)",
             mw, mh, iw, ih)
    return loaded.resize(wh, Image.Resampling.NEAREST)


def empty_mask_reason(mask: Any) -> str | None:
    """Why ``mask`` would repaint nothing (no pixel is white enough), or None when it paints
    something. The text says what was seen and what to do; the panel shows it beside Run.

    >>> empty_mask_reason(Image.new("L", (4, 4), 76))
    'the mask repaints nothing: the brightest mask pixel is 76; white (>= 128) marks what to repaint; fluxnb.mask_threshold turns a coloured mask into one'
    >>> empty_mask_reason(mask_box((4, 4), (0, 0, 1, 1))) is None
    True
    """  # noqa: E501
    low_high = cast("tuple[int, int]", load_mask(mask).getextrema())  # mode L: one band
    brightest = int(low_high[1])
    if brightest >= MASK_THRESHOLD:
        return None
    return (f"the mask repaints nothing: the brightest mask pixel is {brightest}; white "
            f"(>= {MASK_THRESHOLD}) marks what to repaint; fluxnb.mask_threshold turns a coloured "
            f"mask into one")


def mask_is_empty(mask: Any) -> bool:
    """True when no pixel of ``mask`` is white enough (>= 128) to be repainted.

    >>> mask_is_empty(Image.new("L", (4, 4))), mask_is_empty(np.array([[0, 1]], np.uint8))
    (True, False)
    """
    return empty_mask_reason(mask) is not None


def check_mask(mask: Any, image: Any = None, *, field: str = "mask_url") -> Image.Image:
    """The mask as sent: mode ``L``, refused when it repaints nothing (:class:`ValidationError`
    naming ``field``) and fitted to ``image`` (an image input or ``(width, height)``; None: no
    size check) with :func:`fit_mask`, whose :class:`MaskMismatchError` names ``field`` too.

    >>> check_mask(Image.new("L", (4, 4)))
    Traceback (most recent call last):
    ...
    fluxnb.errors.ValidationError: mask_url: the mask repaints nothing: the brightest mask pixel is 0; ...
    >>> check_mask(mask_box((4, 2), (0, 0, 2, 2)), (8, 4)).size
    (8, 4)
    """
    loaded = load_mask(mask)
    reason = empty_mask_reason(loaded)
    if reason is not None:
        raise ValidationError([{"loc": ["body", field], "msg": f"{field}: {reason}",
                                "type": "mask_empty"}])
    if image is None:
        return loaded
    try:
        return fit_mask(loaded, image)
    except MaskMismatchError as exc:
        raise MaskMismatchError(f"{field}: {exc}", field) from None


def mask_coverage(mask: Any) -> float:
    """The fraction of pixels that will be repainted (value >= 128).

    >>> mask_coverage(Image.new("L", (4, 4), 255))
    1.0
    """
    arr = np.asarray(load_mask(mask))
    return float((arr >= 128).mean()) if arr.size else 0.0
