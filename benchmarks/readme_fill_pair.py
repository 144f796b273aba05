"""The README's Telea-against-PatchMatch picture: two rows (a brick texture, a face), columns
original / hole / OpenCV Telea / the preview engine's PatchMatch fill.

    .venv/bin/python benchmarks/readme_fill_pair.py [--out docs/images/fill-telea-vs-patchmatch.jpg]

Everything is made in code or ships with matplotlib (benchmarks/fill_cases.py); nothing is
downloaded. The fills are the shipped ones: ``fill.telea_fill`` and the preview engine at
strength 1.0 (its whole fill, none of the original kept).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fill_cases import hole_centre, make_images, make_mask  # noqa: E402

from fluxnb.schema import validate_input  # noqa: E402
from fluxnb.server.engines import EngineRequest, create_engine  # noqa: E402
from fluxnb.server.engines.fill import telea_fill  # noqa: E402
from fluxnb.server.engines.testing import RecordingContext  # noqa: E402

__all__ = ["main"]

_SIZE = 320
_ROWS = (("bricks", "blob", 0.08), ("photo", "blob", 0.08))
_HEADINGS = ("original", "hole", "OpenCV Telea (before)", "PatchMatch (preview now)")


def _preview(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    engine = create_engine("preview")
    engine.load()
    params = validate_input({"prompt": "fill", "image_url": "https://x.invalid/i.png",
                             "mask_url": "https://x.invalid/m.png", "strength": 1.0, "seed": 3},
                            fill_defaults=True)
    request = EngineRequest(image=Image.fromarray(image), mask=Image.fromarray(hole.astype(np.uint8) * 255),
                            params=params, seed=3)
    return np.asarray(engine.run(request, RecordingContext()).images[0].convert("RGB"))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/fill-telea-vs-patchmatch.jpg")
    out = Path(parser.parse_args(argv).out)
    images = make_images(_SIZE)
    label = 22
    sheet = Image.new("RGB", (4 * _SIZE, len(_ROWS) * _SIZE + label), "white")
    draw = ImageDraw.Draw(sheet)
    for i, heading in enumerate(_HEADINGS):
        draw.text((i * _SIZE + 6, 5), heading, fill="black")
    for row, (name, shape, fraction) in enumerate(_ROWS):
        image = images[name]
        hole = make_mask(shape, fraction, _SIZE, hole_centre(name))
        holed = image.copy()
        holed[hole] = (255, 255, 255)
        cells = (image, holed, telea_fill(image, hole), _preview(image, hole))
        for col, cell in enumerate(cells):
            sheet.paste(Image.fromarray(cell), (col * _SIZE, label + row * _SIZE))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=88, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    return out


if __name__ == "__main__":
    main()
