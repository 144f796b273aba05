"""Time the preview engine at 512² and 1024² with default parameters and a ~15% hole.

    .venv/bin/python benchmarks/bench_preview.py [--runs 5]

Prints the median wall time of ``PreviewEngine.run`` (no HTTP, no encoding) per size, with the
PatchMatch fill and with the OpenCV Telea fallback side by side, and their ratio. Targets
(issue 12): PatchMatch at most 0.3 s at 512² and 1.0 s at 1024² on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from PIL import Image

from fluxnb.schema import validate_input
from fluxnb.server.engines import EngineRequest
from fluxnb.server.engines.fill import patchmatch_available
from fluxnb.server.engines.preview import PreviewEngine
from fluxnb.server.engines.testing import RecordingContext

__all__ = ["main", "make_inputs"]


def make_inputs(size: int, seed: int = 0) -> tuple[Image.Image, Image.Image]:
    """Gradients, stripes, three discs and noise; a central disk mask of about 15% area."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.stack([x / size * 255, y / size * 255, ((x // 16 + y // 16) % 2) * 180], -1)
    for cx, cy, r, col in ((0.3, 0.3, 0.12, (220, 40, 40)), (0.7, 0.4, 0.1, (40, 200, 60)),
                           (0.5, 0.75, 0.15, (30, 60, 220))):
        disc = (x - cx * size) ** 2 + (y - cy * size) ** 2 < (r * size) ** 2
        img[disc] = col
    img += rng.normal(0, 6, img.shape)
    image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    radius = size * np.sqrt(0.15 / np.pi)
    hole = (x - size / 2) ** 2 + (y - size / 2) ** 2 < radius**2
    return image, Image.fromarray(hole.astype(np.uint8) * 255, "L")


def _median_time(engine: PreviewEngine, request: EngineRequest, runs: int) -> tuple[list[float], float]:
    """Wall times of ``runs`` runs after a warm-up, and the median CPU time (robust to a busy box)."""
    engine.run(request, RecordingContext())  # warm-up
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        engine.run(request, RecordingContext())
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    engines = {}
    for fill in ("patchmatch", "telea"):
        engine = PreviewEngine()
        engine.load()
        engine._fill = fill  # the Telea fallback, as when the extension cannot load
        engines[fill] = engine
    if engines["patchmatch"].info()["fill"] != "patchmatch" or not patchmatch_available():
        raise SystemExit("PatchMatch is unavailable here: pip install pypatchmatch")
    for size in (512, 1024):
        image, mask = make_inputs(size)
        params = validate_input({"prompt": "bench", "image_url": "data:,", "mask_url": "data:,"},
                                fill_defaults=True)
        request = EngineRequest(image=image, mask=mask, params=params, seed=42)
        hole = float(np.mean(np.asarray(mask) >= 128))
        medians = {}
        for fill, engine in engines.items():
            times, cpu = _median_time(engine, request, args.runs)
            medians[fill] = statistics.median(times)
            print(f"preview {fill:<10} {size}x{size} hole {hole:.1%} steps 28: median "
                  f"{medians[fill]:.3f} s (min {min(times):.3f}, max {max(times):.3f}, {args.runs} runs; "
                  f"CPU median {cpu:.3f} s)")
        print(f"  {size}x{size}: PatchMatch / Telea = {medians['patchmatch'] / medians['telea']:.1f}x")


if __name__ == "__main__":
    main()
