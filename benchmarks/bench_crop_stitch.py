"""Crop-and-stitch against the whole image: the diffusers engine on the tiny FLUX, on CPU.

    python benchmarks/bench_crop_stitch.py                      # 2048x2048, 2% mask, 4 steps
    python benchmarks/bench_crop_stitch.py --size 1024 --steps 2 --runs 3

A ``--size`` square image with a centred square mask of ``--mask`` of its area goes through
``DiffusersEngine.run`` twice per run: with cropping (``crop=True``, the default: the padded box
inpainted at ``--working-size``² px and stitched back) and without (``crop=False``: the whole
image through the pipeline), each followed by the server's paste-back blend, as the worker does.
It prints the median seconds of each and their ratio. The tiny model (tests/tinyflux.py, about
160 k parameters, built in code, nothing downloaded) has FLUX's 8x VAE and 2x2 patches, so the
pixel work scales like the real model's; its pictures are noise. No GPU is needed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["main"]


def _inputs(size: int, share: float) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([x * 255 // size, y * 255 // size, ((x // 32 + y // 32) % 2) * 180], -1)
    rgb = np.clip(rgb + rng.integers(-8, 9, rgb.shape), 0, 255).astype(np.uint8)
    side = round(size * share ** 0.5)
    mask = np.zeros((size, size), np.uint8)
    lo = (size - side) // 2
    mask[lo:lo + side, lo:lo + side] = 255
    return Image.fromarray(rgb, "RGB"), Image.fromarray(mask, "L")


def main(argv: list[str] | None = None) -> int:
    """Time both ways and print the table and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--mask", type=float, default=0.02, help="mask share of the area")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--working-size", type=int, default=1024)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from fluxnb.server.engines import EngineRequest, create_engine
    from fluxnb.server.engines.compose import default_feather, paste_back
    from fluxnb.server.engines.testing import RecordingContext
    from tests.tinyflux import save_tiny_pipeline

    image, mask = _inputs(args.size, args.mask)
    params = {"prompt": "a red fox", "num_inference_steps": args.steps, "strength": 1.0,
              "guidance_scale": 3.5, "num_images": 1, "enable_safety_checker": False}
    feather = default_feather(*image.size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_pipeline(Path(tmp) / "tiny-flux")
        times: dict[str, list[float]] = {"crop": [], "whole": []}
        lines: list[str] = []
        for label, crop in (("crop", True), ("whole", False)):
            engine = create_engine("diffusers", model=str(folder), device="cpu", crop=crop,
                                   working_size=args.working_size)
            engine.load()
            for _ in range(args.runs):
                ctx = RecordingContext()
                t = time.perf_counter()
                out = engine.run(EngineRequest(image, mask, dict(params), seed=1), ctx)
                paste_back(image, out.images[0], mask, feather)
                times[label].append(time.perf_counter() - t)
                assert out.images[0].size == image.size
            lines += [line for line in ctx.lines if line.startswith("crop:")]
    crop_s, whole_s = statistics.median(times["crop"]), statistics.median(times["whole"])
    print(f"tiny FLUX on CPU ({os.cpu_count()} cores), {args.size}x{args.size}, "
          f"{100 * args.mask:g}% mask, {args.steps} steps, median of {args.runs}")
    for line in lines[:1]:
        print(" ", line)
    print(f"{'way':<8}{'seconds':>10}")
    print(f"{'whole':<8}{whole_s:>10.3f}")
    print(f"{'crop':<8}{crop_s:>10.3f}")
    print(f"ratio whole/crop: {whole_s / crop_s:.2f}x faster with crop-and-stitch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
