"""Per-image numbers that make a sweep quantitative, computed locally from before, mask and after.

* ``change_in_mask``: mean absolute difference (0-255) inside the mask: how much was repainted;
* ``mad_outside``: the same outside the mask: how much leaked into what should be kept;
* ``psnr_outside``: PSNR (dB) outside the mask; identical pixels give ``PSNR_CAP`` (100 dB).

>>> import numpy as np
>>> from PIL import Image
>>> before = Image.fromarray(np.zeros((4, 4, 3), np.uint8))
>>> mask = Image.fromarray(np.pad(np.full((2, 2), 255, np.uint8), 1))
>>> after = Image.fromarray(np.pad(np.full((2, 2, 3), 100, np.uint8), ((1, 1), (1, 1), (0, 0))))
>>> inpaint_metrics(before, mask, after)
{'change_in_mask': 100.0, 'mad_outside': 0.0, 'psnr_outside': 100.0}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["METRICS", "PSNR_CAP", "inpaint_metrics"]

#: The metric columns every row gets (NaN when the image could not be compared).
METRICS = ("change_in_mask", "mad_outside", "psnr_outside")

#: PSNR reported for identical pixels (the true value is infinite, which plots and JSON dislike).
PSNR_CAP = 100.0


def _array(img: Image.Image, size: tuple[int, int], mode: str) -> Any:
    if img.mode != mode:
        img = img.convert(mode)
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float64)


def inpaint_metrics(before: Image.Image, mask: Image.Image, after: Image.Image) -> dict[str, float]:
    """``change_in_mask``, ``mad_outside`` and ``psnr_outside`` of one output image (the before
    image and mask are resized to the output's size when they differ)."""
    size = after.size
    a = _array(after, size, "RGB")
    b = _array(before, size, "RGB")
    inside = _array(mask, size, "L") >= 128
    diff = np.abs(a - b).mean(axis=2)
    out: dict[str, float] = {}
    out["change_in_mask"] = round(float(diff[inside].mean()), 4) if inside.any() else math.nan
    outside = ~inside
    if outside.any():
        out["mad_outside"] = round(float(diff[outside].mean()), 4)
        mse = float(((a - b) ** 2)[outside].mean())
        out["psnr_outside"] = PSNR_CAP if mse == 0 else round(
            min(PSNR_CAP, 10 * math.log10(255.0**2 / mse)), 4)
    else:
        out["mad_outside"] = out["psnr_outside"] = math.nan
    return out
