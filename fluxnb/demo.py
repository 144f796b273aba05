"""Demo inputs that need nothing from the network: a photo that ships with matplotlib and a
mask made in code.

>>> image, mask = demo_inputs()
>>> image.size == mask.size
True
"""

from __future__ import annotations

from PIL import Image, ImageDraw

__all__ = ["DEMO_PROMPT", "demo_inputs", "demo_mask"]

#: The prompt the demo uses (the preview engine ignores it; a real FLUX engine paints it).
DEMO_PROMPT = "a small gold anchor pin on a navy uniform jacket"

# The ribbon bar on the uniform in matplotlib's grace_hopper.jpg (512x600), as an ellipse box.
_RIBBONS = (0.61, 0.79, 0.91, 0.90)


def demo_mask(size: tuple[int, int]) -> Image.Image:
    """A mode-L mask of ``size`` with a white ellipse over the ribbon bar of the demo photo."""
    width, height = size
    mask = Image.new("L", size, 0)
    x0, y0, x1, y1 = _RIBBONS
    ImageDraw.Draw(mask).ellipse((x0 * width, y0 * height, x1 * width, y1 * height), fill=255)
    return mask


def demo_inputs() -> tuple[Image.Image, Image.Image]:
    """(image, mask): matplotlib's ``grace_hopper.jpg`` as RGB and a generated mask."""
    from matplotlib import cbook

    # asfileobj=False gives the path (typed ``str``); opening it "rb" is what asfileobj=True does
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with open(path, "rb") as handle:
        image = Image.open(handle).convert("RGB")
    return image, demo_mask(image.size)
