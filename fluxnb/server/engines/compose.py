"""Paste-back and crop-and-stitch: pure image maths shared by the server and the engines.

**Paste-back** (:func:`paste_back`): outside the mask, beyond a feather band of ``feather`` px,
the output *is* the input, pixel for pixel; inside the mask it is the engine's output; in the band
between, a smooth blend. The blend weight is a smoothstep of the distance to the binarised mask
(grey >= 128 is the hole), so it is 1 on the hole, falls to 0 at ``feather`` px and has no step
larger than about ``1.5 / feather`` between neighbouring pixels: no seam.

**Crop-and-stitch** (:func:`plan_crop`, :func:`crop_pair`, :func:`stitch`): a small mask in a
big image is inpainted on a padded crop around it, resized to the model's working size (sides
multiples of 16, about ``working_size``² pixels), then resized back and pasted into the input;
the paste-back blend then hides the crop's edge (the padding is always wider than the band).

>>> import numpy as np
>>> from PIL import Image
>>> hole = np.zeros((64, 64), np.uint8); hole[28:36, 28:36] = 255
>>> original, generated = Image.new("RGB", (64, 64), "white"), Image.new("RGB", (64, 64), "red")
>>> out = np.asarray(paste_back(original, generated, Image.fromarray(hole), feather=4))
>>> out[32, 32].tolist(), out[32, 35 + 2].tolist(), out[32, 35 + 4].tolist()
([255, 0, 0], [255, 128, 128], [255, 255, 255])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "MULTIPLE",
    "Box",
    "CropPlan",
    "CropSettings",
    "blend_alpha",
    "crop_pair",
    "default_feather",
    "hole_of",
    "mask_box",
    "paste_back",
    "plan_crop",
    "stitch",
    "working_dims",
]

#: FLUX works on 16-pixel cells: a crop's working size has sides that are multiples of 16.
MULTIPLE = 16
#: A crop is padded by at least the feather band plus this, so its edge never shows.
_EDGE_MARGIN = 8

#: ``(x0, y0, x1, y1)``, right and bottom exclusive (PIL's crop box).
Box = tuple[int, int, int, int]


def default_feather(width: int, height: int) -> int:
    """The feather band's width when none is set: 1/64 of the short side, at least 4 px.

    >>> default_feather(64, 64), default_feather(1024, 768), default_feather(2048, 2048)
    (4, 12, 32)
    """
    return max(4, round(min(width, height) / 64))


def hole_of(mask: Image.Image | np.ndarray) -> np.ndarray:
    """The binarised mask: True where grey >= 128 (white = repaint).

    >>> hole_of(np.array([[0, 127, 128, 255]], np.uint8)).tolist()
    [[False, False, True, True]]
    """
    arr = np.asarray(mask.convert("L")) if isinstance(mask, Image.Image) else np.asarray(mask)
    return arr >= 128


def mask_box(hole: np.ndarray, pad: int = 0) -> Box | None:
    """The hole's bounding box grown by ``pad`` px and clipped to the image; None when empty.

    >>> h = np.zeros((10, 20), bool); h[2:4, 5:9] = True
    >>> mask_box(h), mask_box(h, pad=3), mask_box(np.zeros((4, 4), bool))
    ((5, 2, 9, 4), (2, 0, 12, 7), None)
    """
    rows = np.flatnonzero(hole.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(hole.any(axis=0))
    h, w = hole.shape
    return (max(0, int(cols[0]) - pad), max(0, int(rows[0]) - pad),
            min(w, int(cols[-1]) + 1 + pad), min(h, int(rows[-1]) + 1 + pad))


def blend_alpha(hole: np.ndarray, feather: int) -> np.ndarray:
    """The paste-back weight of the engine's output (float32, HxW): 1 on the hole, a smoothstep
    of the distance to it across the ``feather`` px band, and exactly 0 beyond.

    >>> h = np.zeros((1, 12), bool); h[0, :2] = True
    >>> [round(float(a), 3) for a in blend_alpha(h, 4)[0]]
    [1.0, 1.0, 0.844, 0.5, 0.156, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    if feather <= 0:
        return hole.astype(np.float32)
    outside = np.where(hole, 0, 255).astype(np.uint8)
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    t = np.clip(1.0 - dist / np.float32(feather), 0.0, 1.0).astype(np.float32)
    return np.asarray(t * t * (3.0 - 2.0 * t), dtype=np.float32)


def paste_back(original: Image.Image, generated: Image.Image, mask: Image.Image | np.ndarray,
               feather: int) -> Image.Image:
    """``generated`` on the mask, ``original`` beyond ``feather`` px of it, a smooth blend between
    (RGB, the original's size; ``generated`` must have that size too).

    Only the hole's box plus the band is computed, so a small mask in a big image is cheap.
    """
    if generated.size != original.size:
        raise ValueError(f"paste_back: the output is {generated.size[0]}x{generated.size[1]}, "
                         f"the input {original.size[0]}x{original.size[1]}; sizes must match")
    base = np.array(original.convert("RGB"), dtype=np.uint8)
    hole = hole_of(mask)
    box = mask_box(hole, pad=max(0, feather) + 1)
    if box is None:
        return Image.fromarray(base, "RGB")
    x0, y0, x1, y1 = box
    gen = np.asarray(generated.convert("RGB"), dtype=np.uint8)[y0:y1, x0:x1].astype(np.float32)
    alpha = blend_alpha(hole[y0:y1, x0:x1], feather)[..., None]
    orig = base[y0:y1, x0:x1].astype(np.float32)
    mixed = np.rint(orig + alpha * (gen - orig))   # alpha 0 -> orig exactly, 1 -> gen exactly
    base[y0:y1, x0:x1] = np.clip(mixed, 0, 255).astype(np.uint8)
    return Image.fromarray(base, "RGB")


# -- crop-and-stitch ----------------------------------------------------------------------------


def working_dims(width: int, height: int, working_size: int,
                 multiple: int = MULTIPLE) -> tuple[int, int]:
    """The size a ``width`` x ``height`` crop is inpainted at: same aspect ratio, about
    ``working_size``² pixels, sides rounded to multiples of ``multiple`` (at least one).

    >>> working_dims(300, 300, 1024), working_dims(400, 200, 1024), working_dims(80, 40, 64)
    ((1024, 1024), (1456, 720), (96, 48))
    """
    scale = working_size / math.sqrt(width * height)
    return (max(multiple, round(width * scale / multiple) * multiple),
            max(multiple, round(height * scale / multiple) * multiple))


def _widen(lo: int, hi: int, need: int, limit: int) -> tuple[int, int]:
    """Grow ``[lo, hi)`` to ``need`` long (at most ``limit``), centred, inside ``[0, limit)``."""
    need = min(need, limit)
    if hi - lo >= need:
        return lo, hi
    lo = max(0, lo - (need - (hi - lo)) // 2)
    hi = lo + need
    if hi > limit:
        lo, hi = limit - need, limit
    return lo, hi


@dataclass(frozen=True)
class CropPlan:
    """Where the crop is in the image (``box``) and the size it is inpainted at (``size``)."""

    box: Box
    size: tuple[int, int]
    image_size: tuple[int, int]

    @property
    def fraction(self) -> float:
        """The crop's share of the image's area."""
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0) / (self.image_size[0] * self.image_size[1])

    def info(self) -> dict[str, object]:
        """What the result's ``crop`` field says: the box in the image and the size inpainted."""
        return {"box": list(self.box), "inpainted_at": {"width": self.size[0],
                                                        "height": self.size[1]}}

    def describe(self) -> str:
        """The log line that says what was cropped."""
        x0, y0, x1, y1 = self.box
        (w, h), (rw, rh) = self.image_size, self.size
        return (f"crop: inpainting the mask's padded box x {x0}-{x1}, y {y0}-{y1} "
                f"({x1 - x0}x{y1 - y0}, {100 * self.fraction:.1f}% of the {w}x{h} image) at "
                f"{rw}x{rh}, then stitching it back; the output stays {w}x{h}")


@dataclass(frozen=True)
class CropSettings:
    """The diffusers engine's crop options (``--engine-option crop=false``, ``crop_padding=N``,
    ``crop_threshold=F``, ``working_size=PX``); ``crop_padding < 0`` also turns cropping off.

    >>> CropSettings(padding=-1).enabled, CropSettings().enabled
    (False, True)
    """

    crop: bool = True
    padding: int = 32
    threshold: float = 0.5
    working_size: int = 1024

    def __post_init__(self) -> None:
        if not isinstance(self.crop, bool):
            raise ValueError(f"engine option crop must be true or false, not {self.crop!r}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"engine option crop_threshold must be in (0, 1], not "
                             f"{self.threshold!r}: the largest share of the image a crop may have")
        if self.working_size < MULTIPLE:
            raise ValueError(f"engine option working_size must be >= {MULTIPLE} px, not "
                             f"{self.working_size!r} (FLUX.1-dev: 1024)")

    @property
    def enabled(self) -> bool:
        return self.crop and self.padding >= 0


def plan_crop(mask: Image.Image | np.ndarray, settings: CropSettings,
              feather: int) -> CropPlan | None:
    """A crop when it pays: cropping is on, the mask is not empty, the image is larger than the
    working size, and the padded box (padding at least ``feather + 8`` px, widened to at most 2:1)
    covers less than ``settings.threshold`` of the image. None: run on the whole image.

    >>> m = np.zeros((2048, 2048), np.uint8); m[1000:1290, 900:1190] = 255
    >>> plan = plan_crop(m, CropSettings(), feather=32)
    >>> plan.box, plan.size
    ((860, 960, 1230, 1330), (1024, 1024))
    >>> plan_crop(m, CropSettings(working_size=4096), 32) is None   # image no larger than that
    True
    """
    if not settings.enabled:
        return None
    hole = hole_of(mask)
    h, w = hole.shape
    if w * h <= settings.working_size ** 2:
        return None
    box = mask_box(hole, pad=max(settings.padding, feather + _EDGE_MARGIN))
    if box is None:
        return None
    x0, y0, x1, y1 = box
    # a very thin box gets context across it too: at most 2:1
    x0, x1 = _widen(x0, x1, (y1 - y0 + 1) // 2, w)
    y0, y1 = _widen(y0, y1, (x1 - x0 + 1) // 2, h)
    if (x1 - x0) * (y1 - y0) >= settings.threshold * w * h:
        return None
    return CropPlan((x0, y0, x1, y1),
                    working_dims(x1 - x0, y1 - y0, settings.working_size), (w, h))


def crop_pair(image: Image.Image, mask: Image.Image,
              plan: CropPlan) -> tuple[Image.Image, Image.Image]:
    """The crop of ``image`` (RGB, Lanczos) and ``mask`` (L, bilinear) at the plan's size."""
    return (image.convert("RGB").crop(plan.box).resize(plan.size, Image.Resampling.LANCZOS),
            mask.convert("L").crop(plan.box).resize(plan.size, Image.Resampling.BILINEAR))


def stitch(original: Image.Image, result: Image.Image, plan: CropPlan,
           feather: int | None = None) -> Image.Image:
    """The crop's ``result`` resized back and pasted into a copy of ``original`` at the plan's
    box. ``feather``: blend it in over that many px inside the box's edge (used when the
    server's paste-back is off); None: a hard paste, for the paste-back blend to finish.

    >>> plan = CropPlan((4, 4, 12, 12), (16, 16), (16, 16))
    >>> out = stitch(Image.new("RGB", (16, 16)), Image.new("RGB", (16, 16), "red"), plan)
    >>> out.getpixel((8, 8)), out.getpixel((2, 2))
    ((255, 0, 0), (0, 0, 0))
    """
    x0, y0, x1, y1 = plan.box
    back = result.convert("RGB").resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS)
    out = original.convert("RGB").copy()
    out.paste(back, (x0, y0))
    if feather is None or feather <= 0:
        return out
    inner = np.zeros((original.height, original.width), np.uint8)
    f = min(feather, (x1 - x0) // 2 - 1, (y1 - y0) // 2 - 1)
    if f > 0:
        inner[y0 + f:y1 - f, x0 + f:x1 - f] = 255
        return paste_back(original, out, inner, f - 1)
    return out
