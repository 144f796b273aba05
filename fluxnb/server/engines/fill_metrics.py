"""Measures of a hole fill against the ground truth that was under the mask.

Each takes ``fill`` and ``truth`` (HxWx3 uint8 RGB of one size) and ``hole`` (HxW bool, True =
filled) and looks only inside the hole:

- :func:`texture_ratio`: RMS of the Laplacian of the fill over RMS of the truth's (1.0 = as
  textured as the original; a smear scores well under 1). Noise inflates it at will, so pair it
  with
- :func:`patch_distance`: how closely each hidden real patch is matched by some patch of the
  fill (nearest neighbour, RMS grey levels per pixel; 0 = the truth). Noise is far from every
  real patch; a smear has no textured patch to offer; a copied patch of the right texture is close.
- :func:`delta_e`: mean CIE76 colour difference, pixel by pixel (blurs do well here).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> truth = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
>>> hole = np.zeros((32, 32), bool); hole[8:24, 8:24] = True
>>> texture_ratio(truth, truth, hole), patch_distance(truth, truth, hole), delta_e(truth, truth, hole)
(1.0, 0.0, 0.0)
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["delta_e", "mean_delta_e", "patch_distance", "texture_ratio"]

_EPS = 1e-6


def _check(fill: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> np.ndarray:
    if fill.shape != truth.shape or fill.ndim != 3 or fill.shape[2] != 3:
        raise ValueError(f"fill {fill.shape} and truth {truth.shape} must both be HxWx3 of one size; "
                         "pass RGB arrays of the same image size")
    mask = np.asarray(hole, dtype=bool)
    if mask.shape != fill.shape[:2]:
        raise ValueError(f"hole {mask.shape} must be the image's HxW {fill.shape[:2]}; "
                         "resize the mask to the image")
    if not mask.any():
        raise ValueError("hole is empty (no True pixel): there is nothing to measure; "
                         "pass the mask the fill was made with")
    return mask


def _laplacian_rms(image: np.ndarray, mask: np.ndarray) -> float:
    grey = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F, ksize=3)
    return float(np.sqrt(np.mean(lap[mask] ** 2)))


def texture_ratio(fill: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    """Laplacian RMS of ``fill`` over that of ``truth`` inside ``hole``; ``nan`` if the truth is flat.

    >>> flat = np.full((16, 16, 3), 128, np.uint8); hole = np.ones((16, 16), bool)
    >>> bumpy = flat.copy(); bumpy[::2] = 140
    >>> texture_ratio(flat, bumpy, hole)
    0.0
    """
    mask = _check(fill, truth, hole)
    ref = _laplacian_rms(truth, mask)
    if ref < _EPS:
        return float("nan")
    return round(_laplacian_rms(fill, mask) / ref, 6)


def _patches(image: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: int) -> np.ndarray:
    r = size // 2
    padded = np.pad(image.astype(np.float32), ((r, r), (r, r), (0, 0)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(0, 1))
    out: np.ndarray = windows[ys, xs].reshape(len(ys), -1)
    return out


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distance from each row of ``a`` to its nearest row of ``b``."""
    bb = np.einsum("ij,ij->i", b, b)
    best = np.empty(len(a), np.float32)
    for start in range(0, len(a), 1024):  # bounded memory: 1024 x len(b) floats at a time
        chunk = a[start:start + 1024]
        d2 = np.einsum("ij,ij->i", chunk, chunk)[:, None] + bb[None, :] - 2.0 * chunk @ b.T
        best[start:start + 1024] = np.maximum(d2.min(axis=1), 0.0)
    return best


def patch_distance(fill: np.ndarray, truth: np.ndarray, hole: np.ndarray, *, size: int = 3,
                   samples: int = 3000, seed: int = 0) -> float:
    """Mean distance from each real patch in ``hole`` to its nearest fill patch (RMS grey levels).

    Patches of ``size`` x ``size`` (RGB) are centred on up to ``samples`` hole pixels, one seeded
    draw of positions shared by both images, so the truth scores exactly 0. This is the
    "completeness" half of Simakov et al.'s bidirectional similarity: is every real patch
    represented in the fill? The other half (is every fill patch real?) is left out on purpose:
    against a sample of real patches a flat patch (the mean) is closer than any real texture
    patch, so it rewards smears. Completeness does not: noise offers no structured patch and a
    smear no textured one, while a mosaic of the right texture (PatchMatch) offers both.

    >>> stripes = np.zeros((40, 40, 3), np.uint8); stripes[:, ::4] = 255
    >>> shifted = np.roll(stripes, 2, axis=1); hole = np.zeros((40, 40), bool); hole[10:30, 10:30] = True
    >>> patch_distance(shifted, stripes, hole) < patch_distance(np.full_like(stripes, 64), stripes, hole)
    True
    """
    mask = _check(fill, truth, hole)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size={size} must be an odd number of pixels >= 1, e.g. 3")
    ys, xs = np.nonzero(mask)
    if len(ys) > samples:
        pick = np.sort(np.random.default_rng(seed).choice(len(ys), samples, replace=False))
        ys, xs = ys[pick], xs[pick]
    real, filled = _patches(truth, ys, xs, size), _patches(fill, ys, xs, size)
    nearest = _nearest(real, filled)
    return round(float(np.sqrt(nearest / real.shape[1]).mean()), 4)


def _lab(image: np.ndarray) -> np.ndarray:
    rgb = np.ascontiguousarray(image, dtype=np.uint8).astype(np.float32) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)


def delta_e(fill: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    """Mean CIE76 ΔE (L* 0..100) between ``fill`` and ``truth``, pixel by pixel, inside ``hole``.

    >>> a = np.zeros((4, 4, 3), np.uint8); b = a.copy(); b[..., 0] = 255
    >>> delta_e(a, b, np.ones((4, 4), bool)) > 50
    True
    """
    mask = _check(fill, truth, hole)
    diff = _lab(fill)[mask] - _lab(truth)[mask]
    return round(float(np.sqrt((diff**2).sum(axis=1)).mean()), 4)


def mean_delta_e(fill: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    """CIE76 ΔE between the fill's and the truth's mean Lab colour inside ``hole`` (is the
    overall colour right? blur gets no credit for being pixel-aligned).

    >>> a = np.zeros((4, 4, 3), np.uint8)
    >>> mean_delta_e(a, a, np.ones((4, 4), bool))
    0.0
    """
    mask = _check(fill, truth, hole)
    diff = _lab(fill)[mask].mean(axis=0) - _lab(truth)[mask].mean(axis=0)
    return round(float(np.sqrt((diff**2).sum())), 4)
