"""Bytes and time per ``SwipeView.set_images`` for 1024x1024 pairs (``fluxnb.compare``).

    .venv/bin/python benchmarks/bench_swipe.py

Prints, per kind of picture: the format chosen, the bytes sent to the browser for the pair, the
display size, and the median time of set_images (downscale + encode) over 5 calls; and, for
scale, the bytes the pair would be as full-size PNGs.
"""

from __future__ import annotations

import io
import statistics
import time

import numpy as np
from PIL import Image

from fluxnb.demo import demo_inputs
from fluxnb.widgets.swipe import compare


def _png_size(img: Image.Image) -> int:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.tell()


def _pairs() -> dict[str, tuple[Image.Image, Image.Image]]:
    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, 1024)
    grad = np.stack([np.add.outer(x, x) / 2, np.add.outer(x[::-1], x) / 2, np.outer(np.ones(1024), x)], -1)
    noisy = Image.fromarray((grad + rng.normal(0, 8, grad.shape)).clip(0, 255).astype(np.uint8))
    demo = demo_inputs()[0].resize((1024, 1024))
    return {"solid colours": (Image.new("RGB", (1024, 1024), "red"), Image.new("RGB", (1024, 1024), "blue")),
            "demo photo": (demo, demo.rotate(8)),
            "noisy gradient": (noisy, noisy.transpose(Image.Transpose.FLIP_LEFT_RIGHT))}


def main() -> None:
    for name, (a, b) in _pairs().items():
        view = compare(a, b)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            view.set_images(a, b)
            times.append(time.perf_counter() - t)
        full = _png_size(a) + _png_size(b)
        print(f"{name:15s} {view._mime:10s} {view.payload_bytes / 1000:7.1f} kB sent at "
              f"{view.display_size[0]}x{view.display_size[1]} (full-size PNGs {full / 1e6:.2f} MB)  "
              f"set_images median {statistics.median(times) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
