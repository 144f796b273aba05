"""Images with known content and masks of several shapes and sizes for ``bench_fill_quality.py``.

Nothing is downloaded: the photo and the terrain ship with matplotlib (``cbook.get_sample_data``,
as ``fluxnb.demo`` finds its photo); bricks, grass and stripes are drawn in code from a seed.

>>> images = make_images(64)
>>> sorted(images) == sorted(IMAGE_NAMES)
True
>>> mask = make_mask("blob", 0.08, 64)
>>> bool(abs(mask.mean() - 0.08) < 0.02)
True
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["IMAGE_NAMES", "MASKS", "hole_centre", "make_images", "make_mask"]

#: (shape, fraction of the image) of each mask, smallest first.
MASKS: tuple[tuple[str, float], ...] = (("stroke", 0.02), ("blob", 0.08), ("rect", 0.15),
                                        ("blob", 0.30))
IMAGE_NAMES = ("photo", "terrain", "bricks", "grass", "stripes")
#: Where each image's holes are centred (fractions of width, height): the photo's is on the face.
_CENTRES = {"photo": (0.5, 0.36), "terrain": (0.5, 0.5), "bricks": (0.5, 0.5),
            "grass": (0.5, 0.5), "stripes": (0.5, 0.5)}


def hole_centre(name: str) -> tuple[float, float]:
    """Where holes go in image ``name`` (fractions of width and height)."""
    return _CENTRES.get(name, (0.5, 0.5))


def _sample(name: str) -> str:
    from matplotlib import cbook

    return str(cbook.get_sample_data(name, asfileobj=False))


def _photo(size: int) -> np.ndarray:
    with open(_sample("grace_hopper.jpg"), "rb") as handle:
        image = Image.open(handle).convert("RGB")
    side = min(image.size)
    return np.asarray(image.crop((0, 0, side, side)).resize((size, size), Image.Resampling.LANCZOS))


def _terrain(size: int) -> np.ndarray:
    from matplotlib import colormaps
    from matplotlib.colors import LightSource

    with np.load(_sample("jacksboro_fault_dem.npz")) as data:
        elevation = np.asarray(data["elevation"], dtype=np.float64)
    side = min(elevation.shape)
    elevation = elevation[:side, :side]
    shaded = LightSource(azdeg=315, altdeg=45).shade(elevation, cmap=colormaps["gist_earth"],
                                                       blend_mode="soft", vert_exag=0.05)
    rgb = (np.clip(shaded[..., :3], 0, 1) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.LANCZOS))


def _bricks(size: int, rng: np.random.Generator) -> np.ndarray:
    bh, bw, gap = max(4, size // 16), max(8, size // 7), max(1, size // 128)
    img = np.empty((size, size, 3), np.float32)
    img[:] = (196, 190, 178)                                       # mortar
    for row, y in enumerate(range(0, size, bh)):
        offset = (bw // 2) * (row % 2)
        for x in range(-offset, size, bw):
            colour = np.array((150, 62, 44), np.float32) + rng.normal(0, 14, 3)
            img[y + gap:y + bh, max(0, x + gap):max(0, x + bw)] = colour
    img += rng.normal(0, 7, img.shape)                             # grain
    return np.clip(img, 0, 255).astype(np.uint8)


def _grass(size: int, rng: np.random.Generator) -> np.ndarray:
    image = Image.new("RGB", (size, size), (34, 66, 22))
    draw = ImageDraw.Draw(image)
    for _ in range(size * 6):                                      # blades, mostly upright
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        length, lean = rng.uniform(0.03, 0.09) * size, rng.normal(0, 0.35)
        shade = rng.uniform(0.6, 1.25)
        colour = tuple(int(min(255, c * shade)) for c in (74, 128, 42))
        draw.line((x, y, x + lean * length, y - length), fill=colour, width=max(1, size // 256))
    image = image.filter(ImageFilter.GaussianBlur(0.5))
    img: np.ndarray = np.asarray(image, np.float32) + rng.normal(0, 5, (size, size, 3))
    return np.asarray(np.clip(img, 0, 255), np.uint8)


def _stripes(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * (x + 0.6 * y) / (size / 12))[..., None]
    a, b = np.array((230, 200, 60), np.float32), np.array((40, 70, 140), np.float32)
    img = a * wave + b * (1 - wave) + rng.normal(0, 4, (size, size, 3))
    return np.asarray(np.clip(img, 0, 255), np.uint8)


def make_images(size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``{name: HxWx3 uint8 RGB}`` at ``size`` x ``size`` for every name in :data:`IMAGE_NAMES`."""
    rng = np.random.default_rng(seed)
    return {"photo": _photo(size), "terrain": _terrain(size), "bricks": _bricks(size, rng),
            "grass": _grass(size, rng), "stripes": _stripes(size, rng)}


def _draw(shape: str, scale: float, size: int, centre: tuple[float, float],
          rng: np.random.Generator) -> np.ndarray:
    cx, cy = centre[0] * size, centre[1] * size
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    if shape == "rect":
        w, h = 1.25 * scale * size, 0.8 * scale * size
        draw.rectangle((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), fill=255)
    elif shape == "blob":
        angles = np.linspace(0, 2 * np.pi, 90, endpoint=False)
        radius = np.ones_like(angles)
        for k, amp in ((2, 0.18), (3, 0.12), (5, 0.06)):
            radius += amp * np.sin(k * angles + rng.uniform(0, 2 * np.pi))
        r = 0.5 * scale * size * radius
        draw.polygon(list(zip(cx + r * np.cos(angles), cy + r * np.sin(angles), strict=True)), fill=255)
    elif shape == "stroke":
        t = np.linspace(-1, 1, 40)
        xs, ys = cx + 0.38 * size * t, cy + 0.12 * size * np.sin(2.5 * t + 0.5)
        draw.line(list(zip(xs, ys, strict=True)), fill=255, width=max(1, round(scale * size)),
                  joint="curve")
    else:
        raise ValueError(f"mask shape {shape!r} is not one of 'rect', 'blob', 'stroke'")
    return np.asarray(image) >= 128


def make_mask(shape: str, fraction: float, size: int, centre: tuple[float, float] = (0.5, 0.5),
              seed: int = 0) -> np.ndarray:
    """A ``size`` x ``size`` bool hole of ``shape`` covering about ``fraction`` of the image."""
    # the area grows with scale (stroke) or scale squared (rect, blob); a few secant steps hit it
    scale = 0.05 if shape == "stroke" else float(np.sqrt(fraction))
    for _ in range(6):
        hole = _draw(shape, scale, size, centre, np.random.default_rng(seed))
        area = max(float(hole.mean()), 1e-6)
        power = 1.0 if shape == "stroke" else 0.5
        scale *= (fraction / area) ** power
    return _draw(shape, scale, size, centre, np.random.default_rng(seed))
