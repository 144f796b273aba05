"""The ``preview`` engine: content-aware classical hole filling. Not a generative model.

The fill is PatchMatch (``fill.patchmatch_fill``: texture continued from around the hole);
when its native extension cannot load, OpenCV Telea (``fill.telea_fill``) with seeded noise
takes over, as before, and one log line says so; ``info()["fill"]`` says which is in use.
Every request parameter maps onto something deterministic and cheap (``docs/engines.md``):

- ``mask_url``: grey >= 128 is the hole. PatchMatch: every pixel outside the hole is
  byte-identical to the input (the fill is written into the hole only). Telea: the result is
  feathered over a band of about 1% of the short side just outside the hole, and every pixel
  beyond that band is byte-identical.
- ``num_inference_steps`` -> PatchMatch patch radius ``1 + round(2 * (steps - 1) / 49)``
  (3x3 .. 7x7 patches; larger follows larger structure, costs more) or Telea radius
  ``1 + round(4 * (steps - 1) / 49)`` (1..5 px), and ``ceil(steps * strength)`` logged
  annealing steps from a seeded noisy start to the result (progress and cancel are real).
- ``seed`` -> image ``i`` uses ``seed + i``: PatchMatch's randomised search is seeded with it
  (another seed, another plausible fill, so ``num_images`` gives variety); the annealing start
  (and Telea's added noise) is ``np.random.default_rng(seed + i)``: low-frequency noise (a
  normal field at 1/32 resolution, bicubic-upscaled, x12) plus fine noise (sigma 4).
- ``strength`` -> in the hole ``(1 - s) * original + s * fill`` (PatchMatch) or
  ``(1 - s) * original + s * (fill + s * noise)`` (Telea).
- ``prompt``, ``guidance_scale``, ``loras`` and ``enable_safety_checker`` have no effect on pixels;
  they are echoed and listed in ``ignored_params``.

>>> from fluxnb.server.engines import create_engine
>>> engine = create_engine("preview")
>>> engine.generative
False
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import cv2
import numpy as np
from PIL import Image

from .base import Engine, EngineOutput, EngineRequest, JobContext
from .fill import (
    grow_bounds,
    hole_bounds,
    load_patchmatch,
    patch_size_for,
    patchmatch_fill,
    telea_fill,
)

__all__ = ["NOTICE", "PreviewEngine", "feather_kernel", "patchmatch_fill", "telea_fill",
           "telea_radius"]

#: What every preview result says about itself.
NOTICE = ("preview engine: classical hole filling (PatchMatch, or OpenCV Telea + seeded noise), "
          "not a generative model; "
          "prompt, guidance_scale and loras have no effect")

_IGNORED = ("prompt", "guidance_scale", "loras", "enable_safety_checker")
_LOW_RES = 32          # the low-frequency noise field is 1/32 of the image size
_LOW_AMP = 12.0
_FINE_SIGMA = 4.0
_threads_set = False


def telea_radius(steps: int) -> int:
    """Telea's neighbourhood radius for ``steps`` (1 -> 1 px, 50 -> 5 px).

    >>> telea_radius(1), telea_radius(28), telea_radius(50)
    (1, 3, 5)
    """
    return 1 + round(4 * (steps - 1) / 49)


def feather_kernel(width: int, height: int) -> int:
    """Odd Gaussian kernel size of the feather: about 1% of the short side, at least 3.

    >>> feather_kernel(1024, 768)
    9
    """
    k = max(3, round(0.01 * min(width, height)))
    return k if k % 2 else k + 1


class PreviewEngine(Engine):
    """Classical hole filling (PatchMatch, or OpenCV Telea + seeded noise): fast, deterministic, honest.

    >>> PreviewEngine().info()["generative"]
    False
    """

    name = "preview"
    description = ("content-aware classical hole filling (PatchMatch; OpenCV Telea + seeded noise "
                   "as the fallback); not a generative model")
    generative = False
    _fill: str | None = None

    def load(self) -> None:
        global _threads_set
        if not _threads_set:
            # Telea is single-threaded; keep OpenCV's pool small so worker threads don't fight.
            cv2.setNumThreads(max(1, min(4, os.cpu_count() or 1)))
            _threads_set = True
        self._fill = "patchmatch" if load_patchmatch() is not None else "telea"

    @property
    def fill(self) -> str:
        """``"patchmatch"`` or ``"telea"`` (the fallback when the extension cannot load)."""
        if self._fill is None:
            self._fill = "patchmatch" if load_patchmatch() is not None else "telea"
        return self._fill

    def info(self) -> dict[str, Any]:
        return {**super().info(), "notice": NOTICE, "ignored_params": list(_IGNORED),
                "fill": self.fill}

    def run(self, request: EngineRequest, ctx: JobContext) -> EngineOutput:
        t0 = time.perf_counter()
        img = np.asarray(request.image.convert("RGB"), dtype=np.uint8)
        mask = request.mask.convert("L")
        if mask.size != request.image.size:
            mask = mask.resize(request.image.size, Image.Resampling.NEAREST)
        hole = np.asarray(mask) >= 128
        h, w = hole.shape
        steps, strength, n = request.steps, request.strength, request.num_images
        content_aware = self.fill == "patchmatch"
        radius, patch = telea_radius(steps), patch_size_for(steps)
        kernel = feather_kernel(w, h)
        anneal = max(1, math.ceil(steps * strength - 1e-9))
        how = (f"PatchMatch patch radius {patch}, no feather (outside the hole is untouched)"
               if content_aware else f"Telea radius {radius} px, feather {kernel} px")
        ctx.log(f"preview: {how}, {anneal} of {steps} steps at strength {strength:g}")
        ctx.log("preview: prompt, guidance_scale and loras have no effect (not a generative model)")
        if request.params.get("enable_safety_checker", True):
            ctx.log("preview: no safety checker; has_nsfw_concepts is always false")

        box = hole_bounds(hole)
        if box is None:
            ctx.log("mask is empty: nothing to inpaint; returning the input")
        else:
            ry0, ry1, rx0, rx1 = region = box if content_aware else grow_bounds(box, kernel // 2, h, w)
            orig = img[ry0:ry1, rx0:rx1].astype(np.float32)
            hole_r = hole[ry0:ry1, rx0:rx1].astype(np.float32)
            if content_aware:
                alpha = hole_r[..., None]
            else:
                fill_r = telea_fill(img, hole, radius)[ry0:ry1, rx0:rx1].astype(np.float32)
                blurred = cv2.GaussianBlur(hole_r, (kernel, kernel), 0, borderType=cv2.BORDER_CONSTANT)
                alpha = np.maximum(hole_r, blurred)[..., None]
            keep = alpha == 0
        images: list[Image.Image] = []
        for i in range(n):
            if box is None:
                for k in range(1, anneal + 1):
                    ctx.step(k, anneal, image_index=i, num_images=n)
                images.append(Image.fromarray(img.copy(), "RGB"))
                continue
            noise = _noise(request.seed + i, (h, w), region)
            if content_aware:
                fill_i = patchmatch_fill(img, hole, seed=request.seed + i, patch_size=patch)
                gen = (1 - strength) * orig + strength * fill_i[ry0:ry1, rx0:rx1].astype(np.float32)
            else:
                gen = (1 - strength) * orig + strength * (fill_r + strength * noise)
            target = alpha * gen + (1 - alpha) * orig
            # Anneal from a seeded noisy start toward the target, one logged step at a time.
            x = orig + alpha * noise
            for k in range(1, anneal + 1):
                x += (target - x) * (1.0 / (anneal - k + 1))
                ctx.step(k, anneal, image_index=i, num_images=n)
            # after the last step x is the target: the steps are the computation, not decoration
            patch_px = np.where(keep, img[ry0:ry1, rx0:rx1],
                                np.clip(np.rint(x), 0, 255).astype(np.uint8))
            out = img.copy()
            out[ry0:ry1, rx0:rx1] = patch_px
            images.append(Image.fromarray(out, "RGB"))
        return EngineOutput(
            images=images,
            has_nsfw_concepts=[False] * n,
            timings={"preview": round(time.perf_counter() - t0, 6)},
            extra={"engine": self.name, "notice": NOTICE, "ignored_params": list(_IGNORED),
                   "fill": self.fill, "guidance_scale": request.guidance_scale,
                   "loras": request.loras, "num_inference_steps": steps, "strength": strength},
        )


def _noise(seed: int, size: tuple[int, int], region: tuple[int, int, int, int]) -> np.ndarray:
    """Seeded noise for ``region`` of an image of ``size``: low-frequency x12 plus fine sigma 4."""
    h, w = size
    y0, y1, x0, x1 = region
    rng = np.random.default_rng(seed)
    gh, gw = -(-h // _LOW_RES), -(-w // _LOW_RES)
    low = rng.standard_normal((gh, gw, 3), dtype=np.float32)
    fine = rng.standard_normal((y1 - y0, x1 - x0, 3), dtype=np.float32)
    # Upscale only the grid cells around the region (2 cells of bicubic context each side).
    cy0, cy1 = max(0, y0 // _LOW_RES - 2), min(gh, -(-y1 // _LOW_RES) + 2)
    cx0, cx1 = max(0, x0 // _LOW_RES - 2), min(gw, -(-x1 // _LOW_RES) + 2)
    sub = np.ascontiguousarray(low[cy0:cy1, cx0:cx1])
    up = cv2.resize(sub, ((cx1 - cx0) * _LOW_RES, (cy1 - cy0) * _LOW_RES),
                    interpolation=cv2.INTER_CUBIC)
    oy, ox = y0 - cy0 * _LOW_RES, x0 - cx0 * _LOW_RES
    up = up.reshape(up.shape[0], up.shape[1], 3)
    return _LOW_AMP * up[oy:oy + (y1 - y0), ox:ox + (x1 - x0)] + _FINE_SIGMA * fine
