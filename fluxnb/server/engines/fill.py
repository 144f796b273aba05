"""Classical hole fills for the preview engine: PatchMatch (content-aware) and OpenCV Telea.

``patchmatch_fill`` continues the texture around a hole (Barnes et al. 2009, through the
``pypatchmatch`` wheel). To stay interactive it works on the hole's padded bounding box only,
at a reduced scale when that box holds more than ``work_pixels`` pixels, then upscales the fill
and writes it into the hole alone: every pixel outside the hole is returned unchanged.
``telea_fill`` is the fallback when the native extension cannot load.

>>> import numpy as np
>>> image = np.zeros((32, 32, 3), np.uint8)
>>> hole = np.zeros((32, 32), bool); hole[8:16, 8:16] = True
>>> out = patchmatch_fill(image, hole, seed=1) if patchmatch_available() else image
>>> out.shape
(32, 32, 3)
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType

import cv2
import numpy as np

from .compose import mask_box

__all__ = ["WORK_PIXELS", "grow_bounds", "hole_bounds", "load_patchmatch", "patch_size_for",
           "patchmatch_available", "patchmatch_fill", "telea_fill"]

log = logging.getLogger("fluxnb.preview")

#: Pixels of the padded box PatchMatch works on at 512x512 (more boxes are scaled down to it);
#: images with a larger short side get proportionally more (``sqrt(h * w) / 512`` times).
WORK_PIXELS = 12_000
_TELEA_MARGIN = 4      # context pixels Telea needs beyond its radius (gradients, rounding)
_lock = threading.Lock()   # the library's seed is process-global: seed + inpaint run together
_module: ModuleType | None = None
_loaded = False


def load_patchmatch(*, reload: bool = False) -> ModuleType | None:
    """The ``patchmatch`` module when its native library loads, else ``None`` (logged once).

    >>> load_patchmatch() is None or load_patchmatch().patchmatch_available
    True
    """
    global _module, _loaded
    if _loaded and not reload:
        return _module
    _loaded, _module = True, None
    try:
        import patchmatch
        if not patchmatch.patchmatch_available:
            raise ImportError("its native library did not load")
        _module = patchmatch
    except Exception as exc:  # noqa: BLE001 - any failure to load means: use the fallback
        log.warning("preview: PatchMatch unavailable (%s); falling back to OpenCV Telea", exc)
    return _module


def patchmatch_available() -> bool:
    """Whether ``patchmatch_fill`` can run here.

    >>> isinstance(patchmatch_available(), bool)
    True
    """
    return load_patchmatch() is not None


def patch_size_for(steps: int) -> int:
    """PatchMatch patch radius for ``steps`` (1 -> 1, i.e. 3x3 patches; 28 -> 2; 50 -> 3).

    >>> patch_size_for(1), patch_size_for(28), patch_size_for(50)
    (1, 2, 3)
    """
    return 1 + round(2 * (steps - 1) / 49)


def hole_bounds(hole: np.ndarray, pad: int = 0) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` of the hole grown by ``pad`` and clipped (ends exclusive); None when
    empty. The row-first order numpy slicing wants; :func:`compose.mask_box` finds it.

    >>> h = np.zeros((10, 20), bool); h[2:4, 5:9] = True
    >>> hole_bounds(h), hole_bounds(h, 3)
    ((2, 4, 5, 9), (0, 7, 2, 12))
    """
    box = mask_box(hole, pad)
    return None if box is None else (box[1], box[3], box[0], box[2])


def grow_bounds(box: tuple[int, int, int, int], pad: int, h: int, w: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` grown by ``pad`` and clipped to an ``h`` x ``w`` image."""
    y0, y1, x0, x1 = box
    return max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad)


def patchmatch_fill(image: np.ndarray, hole: np.ndarray, *, seed: int = 0, patch_size: int = 2,
                    work_pixels: int | None = None) -> np.ndarray:
    """PatchMatch fill of ``image`` (HxWx3 uint8) where ``hole`` (HxW bool) is True.

    ``seed`` seeds the randomised search (same seed, same pixels; another seed, another
    plausible fill); ``patch_size`` is the patch radius (1..3 is interactive). The box around
    the hole, padded by half its mean side, is scaled down to about ``work_pixels`` pixels
    (default ``WORK_PIXELS``, more for big images) when larger. Pixels outside ``hole`` are
    returned unchanged. Raises ``RuntimeError`` when the extension is unavailable.

    >>> img = np.full((16, 16, 3), 7, np.uint8); h = np.zeros((16, 16), bool); h[4:8, 4:8] = True
    >>> bool((patchmatch_fill(img, h)[h] == 7).all()) if patchmatch_available() else True
    True
    """
    pm = load_patchmatch()
    if pm is None:
        raise RuntimeError("PatchMatch is unavailable here (pip install pypatchmatch); "
                           "use telea_fill instead")
    box = hole_bounds(hole)
    if box is None:
        return image.copy()
    h, w = hole.shape
    pad = max(8, ((box[1] - box[0]) + (box[3] - box[2])) // 4)
    y0, y1, x0, x1 = grow_bounds(box, pad, h, w)
    crop, crop_hole = image[y0:y1, x0:x1], hole[y0:y1, x0:x1]
    budget = work_pixels or round(WORK_PIXELS * max(1.0, (h * w) ** 0.5 / 512))
    scale = min(1.0, (budget / crop_hole.size) ** 0.5)
    if scale < 1.0:
        size = (max(8, round((x1 - x0) * scale)), max(8, round((y1 - y0) * scale)))
        small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        # a small pixel that touches the hole at all is hole: nothing of the old content leaks in
        small_hole = cv2.resize(crop_hole.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
    else:
        small, small_hole = crop, crop_hole
    with _lock:
        pm.set_random_seed(int(seed) % 2**32)
        filled = pm.inpaint(np.ascontiguousarray(small), small_hole.astype(np.uint8),
                            patch_size=patch_size)
    if scale < 1.0:
        filled = cv2.resize(filled, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    out = image.copy()
    out[y0:y1, x0:x1][crop_hole] = filled[crop_hole]
    return out


def telea_fill(image: np.ndarray, hole: np.ndarray, radius: int = 3, *, crop: bool = True) -> np.ndarray:
    """``cv2.inpaint`` (Telea) of ``image`` (HxWx3 uint8) where ``hole`` is True.

    With ``crop`` only the hole's bounding box plus ``radius + 4`` px of context is processed;
    pixels outside that box are returned unchanged (as Telea leaves them anyway).

    >>> img = np.full((16, 16, 3), 7, np.uint8); h = np.zeros((16, 16), bool); h[4:8, 4:8] = True
    >>> out = telea_fill(img, h)
    >>> out.shape, bool((out[~h] == 7).all())
    ((16, 16, 3), True)
    """
    box = hole_bounds(hole)
    if box is None:
        return image.copy()
    h, w = hole.shape
    y0, y1, x0, x1 = grow_bounds(box, radius + _TELEA_MARGIN, h, w) if crop else (0, h, 0, w)
    out = image.copy()
    mask8 = np.ascontiguousarray(hole[y0:y1, x0:x1], dtype=np.uint8) * 255
    out[y0:y1, x0:x1] = cv2.inpaint(np.ascontiguousarray(image[y0:y1, x0:x1]), mask8, radius,
                                    cv2.INPAINT_TELEA)
    return out
