"""Pictures of a job: the before / mask / after strip that ``fluxnb run`` and ``fluxnb demo`` write.

Pure PIL, so it works in scripts, in CI and in notebooks without a display.

>>> from PIL import Image
>>> img = Image.new("RGB", (64, 48), "gray"); m = Image.new("L", (64, 48), 0)
>>> before_mask_after(img, m, [img]).size[0] > 3 * 64
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["before_mask_after", "mask_overlay"]

_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
_OVERLAY = (255, 0, 72)


def mask_overlay(
    image: Image.Image, mask: Image.Image, *, color: tuple[int, int, int] = _OVERLAY, alpha: float = 0.5
) -> Image.Image:
    """The image with the mask's repaint area (white, >= 128) tinted in ``color`` and outlined.

    >>> mask_overlay(Image.new("RGB", (8, 8)), Image.new("L", (8, 8), 255)).getpixel((4, 4))[0] > 0
    True
    """
    base = image.convert("RGB")
    hole = np.asarray(mask.convert("L").resize(base.size, Image.Resampling.NEAREST)) >= 128
    arr = np.asarray(base).astype(np.float32)
    tint = np.array(color, np.float32)
    arr[hole] = arr[hole] * (1 - alpha) + tint * alpha
    # outline: hole pixels with a non-hole 4-neighbour
    edge = hole.copy()
    edge[1:-1, 1:-1] &= ~(hole[:-2, 1:-1] & hole[2:, 1:-1] & hole[1:-1, :-2] & hole[1:-1, 2:])
    arr[edge] = tint
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def _fit(image: Image.Image, height: int) -> Image.Image:
    scale = height / image.height
    size = (max(1, round(image.width * scale)), height)
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def before_mask_after(
    image: Image.Image,
    mask: Image.Image,
    outputs: Sequence[Image.Image],
    *,
    titles: Sequence[str] | None = None,
    caption: str = "",
    height: int = 384,
    gap: int = 12,
) -> Image.Image:
    """One picture: the input, the mask over the input, then every output, each titled.

    ``height`` is the height of every tile (aspect kept); ``caption`` is a line under the strip,
    e.g. the parameters of the run. Returns an RGB PIL image; save it with ``.save("x.png")``.
    """
    tiles = [_fit(image, height), _fit(mask_overlay(image, mask), height)]
    tiles += [_fit(out, height) for out in outputs]
    names = ["before", "mask"] + (
        [f"after {i + 1}" if len(outputs) > 1 else "after" for i in range(len(outputs))]
    )
    if titles is not None:
        if len(titles) != len(tiles):
            raise ValueError(f"titles has {len(titles)} entries; expected {len(tiles)} "
                             f"(before, mask and {len(outputs)} outputs)")
        names = list(titles)
    font_size = max(12, height // 18)
    font, small = _font(font_size), _font(max(10, font_size * 3 // 4))
    title_h = font_size + gap
    caption_h = (font_size + gap) if caption else 0
    width = sum(t.width for t in tiles) + gap * (len(tiles) + 1)
    sheet = Image.new("RGB", (width, height + title_h + caption_h + 2 * gap), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    x = gap
    for tile, name in zip(tiles, names, strict=True):  # names has one entry per tile
        draw.text((x + tile.width / 2, gap + font_size / 2), name, fill=_TEXT, font=font, anchor="mm")
        sheet.paste(tile, (x, gap + title_h))
        x += tile.width + gap
    if caption:
        draw.text((gap, gap + title_h + height + gap // 2), caption, fill=_TEXT, font=small)
    return sheet
