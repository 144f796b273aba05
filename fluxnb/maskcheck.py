"""The mask rules the client and the server both apply: empty masks are refused, masks of another
aspect ratio are refused, masks of the same aspect ratio are resized (kernel: PIL only, no
notebook knowledge; :mod:`fluxnb.masks` re-exports every name here).

>>> from PIL import Image
>>> mask_is_empty(Image.new("L", (8, 8)))
True
>>> fit_mask(Image.new("L", (64, 48), 255), Image.new("RGB", (128, 96))).size
(128, 96)
"""

from __future__ import annotations

import logging
from typing import Any, cast

from PIL import Image

from .errors import MaskMismatchError, ValidationError
from .images import image_size_of, load_image, load_mask
from .schema import MASK_ASPECT_TOLERANCE, MASK_THRESHOLD

__all__ = ["Size", "aspect_mismatch", "check_mask", "empty_mask_reason", "fit_mask", "mask_is_empty",
           "size_of"]

Size = tuple[int, int]

# the logger keeps its old name: users and tests filter on "fluxnb.masks"
log = logging.getLogger("fluxnb.masks")


def size_of(size_or_image: Any) -> Size:
    """``(width, height)`` from a size, a PIL image or anything with a ``.size`` pair (a painter).

    >>> size_of((4, 3)), size_of(Image.new("L", (5, 2)))
    ((4, 3), (5, 2))
    """
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
        wh = size_of(image)
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
    >>> empty_mask_reason(Image.new("L", (4, 4), 255)) is None
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

    >>> import numpy as np
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
    >>> check_mask(Image.new("L", (4, 2), 255), (8, 4)).size
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
