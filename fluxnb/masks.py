"""Mask tools: make, combine and fix inpainting masks (mode ``L``; white = repaint, black = keep).

Pure PIL + numpy, so they work in scripts, tests and notebooks alike. Shapes take the mask size
(``(width, height)`` or an image to copy the size from) and coordinates in pixels, or fractions of
the size with ``relative=True``. The rules the client and the server share (empty masks, aspect
ratios: :func:`check_mask`, :func:`fit_mask`, ...) live in the kernel module :mod:`fluxnb.maskcheck`
and are re-exported here.

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

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from .errors import MaskMismatchError
from .images import load_image, load_mask
from .maskcheck import Size, aspect_mismatch, check_mask, empty_mask_reason, fit_mask, mask_is_empty
from .maskcheck import size_of as _size

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


def mask_coverage(mask: Any) -> float:
    """The fraction of pixels that will be repainted (value >= 128).

    >>> mask_coverage(Image.new("L", (4, 4), 255))
    1.0
    """
    arr = np.asarray(load_mask(mask))
    return float((arr >= 128).mean()) if arr.size else 0.0
