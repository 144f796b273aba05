"""Fill quality of Telea, PatchMatch, the preview engine and a seeded-noise baseline.

    .venv/bin/python benchmarks/bench_fill_quality.py [--size 384] [--out /tmp/fill_quality.png]

Every image has known content under the mask (see ``fill_cases.py``: a photo and a terrain
that ship with matplotlib, bricks, grass and stripes drawn in code), holes are strokes, blobs
and rectangles of about 2, 8, 15 and 30% of the image. Per fill it prints, inside the hole
(``fluxnb.server.engines.fill_metrics``):

- ``texture``: Laplacian RMS of the fill over the original's (1.0 = as textured; a smear < 1);
- ``patch``: for each hidden real 3x3 patch, the distance to its nearest patch in the fill
  (RMS grey levels, 0 = the original): Simakov et al.'s "completeness". Noise can buy
  ``texture`` but not ``patch``: no noise patch is close to a real one; a smear offers no textured
  patch either. Not SSIM or MAE: a good fill of a texture is never pixel-aligned with the
  original, so they prefer a blur (and so does the other half of bidirectional similarity,
  "is every fill patch real?", against a sample of real patches: the flat mean is closest);
- ``ΔE``: mean CIE76 colour difference per pixel, ``ΔE mean``: of the mean colours;
- ``ms``: wall time of the fill; ``cpu ms``: its process CPU time (steadier on shared cores).

The methods: ``telea`` (``cv2.inpaint`` INPAINT_TELEA, radius 3, whole image), ``patchmatch``
(``pypatchmatch``, patch_size 3, whole image, seeded), ``preview`` (``create_engine("preview")``
run on an ``EngineRequest`` with the default parameters except ``strength`` (``--strength``,
default 1.0: at the schema's 0.85 the preview keeps 15% of the original in the hole, which a
fill of unknown content cannot have) and ``noise`` (seeded Gaussian noise with the mean of a
ring around the hole and the ring's std, scaled (up to 3x) until its Laplacian RMS equals the ring's:
the texture a filler can know without seeing the hole). A markdown table goes to stdout, a
contact sheet (rows = image x mask, crops around the hole) to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fill_cases import IMAGE_NAMES, MASKS, hole_centre, make_images, make_mask  # noqa: E402

from fluxnb.schema import validate_input  # noqa: E402
from fluxnb.server.engines import EngineRequest, create_engine  # noqa: E402
from fluxnb.server.engines.fill_metrics import (  # noqa: E402
    delta_e,
    mean_delta_e,
    patch_distance,
    texture_ratio,
)
from fluxnb.server.engines.testing import RecordingContext  # noqa: E402

__all__ = ["METHODS", "main", "noise_fill"]

Fill = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def telea(image: np.ndarray, hole: np.ndarray, seed: int) -> np.ndarray:
    """``cv2.inpaint`` Telea, radius 3, on the whole image."""
    return cv2.inpaint(image, hole.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)


def patchmatch_fill(image: np.ndarray, hole: np.ndarray, seed: int) -> np.ndarray:
    """``pypatchmatch`` on the whole image, patch_size 3, seeded."""
    import patchmatch

    patchmatch.set_random_seed(seed)
    return np.asarray(patchmatch.inpaint(image, hole.astype(np.uint8) * 255, patch_size=3))


class _Preview:
    """The preview engine as shipped, run through an EngineRequest like the server does."""

    def __init__(self, strength: float) -> None:
        self.engine = create_engine("preview")
        self.engine.load()
        self.strength = strength

    def __call__(self, image: np.ndarray, hole: np.ndarray, seed: int) -> np.ndarray:
        params = validate_input({"prompt": "fill", "image_url": "data:,", "mask_url": "data:,",
                                 "strength": self.strength}, fill_defaults=True)
        request = EngineRequest(image=Image.fromarray(image, "RGB"),
                                mask=Image.fromarray(hole.astype(np.uint8) * 255, "L"),
                                params=params, seed=seed)
        out = self.engine.run(request, RecordingContext())
        return np.asarray(out.images[0].convert("RGB"))


def _ring(hole: np.ndarray) -> np.ndarray:
    width = max(3, round(0.04 * min(hole.shape)))
    grown: np.ndarray = cv2.dilate(hole.astype(np.uint8), np.ones((2 * width + 1,) * 2, np.uint8)) > 0
    return np.asarray(grown & ~hole, bool)


def noise_fill(image: np.ndarray, hole: np.ndarray, seed: int) -> np.ndarray:
    """Seeded grey Gaussian noise with the ring's mean and std, its amplitude scaled (x0..3) until
    its Laplacian RMS equals the ring's: as much "texture" as a filler can know about."""
    ring = _ring(hole)
    pixels = image[ring].astype(np.float32)
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)
    z = np.random.default_rng(seed).standard_normal((*hole.shape, 1)).astype(np.float32)

    def lap_rms(img: np.ndarray, where: np.ndarray) -> float:
        grey = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
        lap = cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F, ksize=3)
        return float(np.sqrt(np.mean(lap[where] ** 2)))

    target, amp = lap_rms(image.astype(np.float32), ring), 1.0
    for _ in range(4):  # the Laplacian of white noise is linear in its amplitude (until clipping)
        trial = np.where(hole[..., None], mean + amp * std * z, image)
        got = lap_rms(trial, hole)
        amp = min(3.0, amp * target / max(got, 1e-6))
    out = np.where(hole[..., None], mean + amp * std * z, image)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


METHODS: tuple[str, ...] = ("telea", "patchmatch", "preview", "noise")


def _crop_box(hole: np.ndarray) -> tuple[int, int, int, int]:
    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    side = min(h, w, max(h // 3, round(1.3 * max(ys.max() - ys.min(), xs.max() - xs.min()))))
    y0 = int(np.clip(cy - side / 2, 0, h - side))
    x0 = int(np.clip(cx - side / 2, 0, w - side))
    return x0, y0, x0 + side, y0 + side


def _sheet(rows: list[tuple[str, np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, str]]],
           cell: int) -> Image.Image:
    columns = ("original", "masked", *METHODS)
    label_w, head = 150, 24
    font = ImageFont.load_default(size=13)
    sheet = Image.new("RGB", (label_w + cell * len(columns), head + cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(columns):
        draw.text((label_w + j * cell + 6, 5), name, fill="black", font=font)
    for i, (label, image, hole, fills, notes) in enumerate(rows):
        box = _crop_box(hole)
        masked = image.copy()
        masked[hole] = (255, 0, 255)
        tiles = [image, masked, *(fills[m] for m in METHODS)]
        y = head + i * cell
        draw.text((6, y + cell // 2 - 16), label.replace(" / ", "\n"), fill="black", font=font)
        for j, tile in enumerate(tiles):
            crop = Image.fromarray(tile).crop(box).resize((cell, cell), Image.Resampling.LANCZOS)
            sheet.paste(crop, (label_w + j * cell, y))
            note = notes.get(columns[j])
            if note:
                tx, ty = label_w + j * cell + 3, y + cell - 17
                draw.rectangle((tx - 2, ty - 1, tx + 7 * len(note), ty + 15), fill="black")
                draw.text((tx, ty), note, fill="white", font=font)
    return sheet


def _table(records: list[dict[str, object]]) -> str:
    lines = ["| image | mask | hole | method | texture | patch | ΔE | ΔE mean | ms | cpu ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['image']} | {r['mask']} | {r['hole']:.1%} | {r['method']} | "
                     f"{r['texture']:.2f} | {r['patch']:.1f} | {r['de']:.1f} | {r['de_mean']:.1f} | "
                     f"{r['ms']:.0f} | {r['cpu']:.0f} |")
    return "\n".join(lines)


def _summary(records: list[dict[str, object]]) -> str:
    lines = ["| method | texture (median) | texture off by (median abs log) | patch (median) | best patch "
             "(of real fills) | ΔE (median) | ΔE mean (median) | ms (median) | cpu ms (median) |",
             "|---|---|---|---|---|---|---|---|---|"]
    cases = {(r["image"], r["mask"]) for r in records}
    best: dict[str, int] = dict.fromkeys(METHODS, 0)
    for case in cases:
        real = [r for r in records if (r["image"], r["mask"]) == case and r["method"] != "noise"]
        best[str(min(real, key=lambda r: float(r["patch"]))["method"])] += 1  # type: ignore[arg-type]
    for m in METHODS:
        mine = [r for r in records if r["method"] == m]

        def med(key: str, rows: list[dict[str, object]] = mine) -> float:
            return statistics.median(float(r[key]) for r in rows)  # type: ignore[arg-type]

        logt = statistics.median(abs(float(np.log(max(float(r["texture"]), 1e-3))))  # type: ignore[arg-type]
                                 for r in mine)
        wins = f"{best[m]}/{len(cases)}" if m != "noise" else "-"
        lines.append(f"| {m} | {med('texture'):.2f} | {logt:.2f} | {med('patch'):.1f} | {wins} | "
                     f"{med('de'):.1f} | {med('de_mean'):.1f} | {med('ms'):.0f} | {med('cpu'):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=int, default=384, help="image side in pixels (default 384)")
    parser.add_argument("--out", default="/tmp/fill_quality_sheet.png", help="contact sheet PNG")
    parser.add_argument("--cell", type=int, default=160, help="contact sheet cell size in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strength", type=float, default=1.0, help="the preview engine's strength")
    parser.add_argument("--images", default=",".join(IMAGE_NAMES), help="comma-separated subset")
    args = parser.parse_args(argv)
    cv2.setNumThreads(2)
    fills: dict[str, Fill] = {"telea": telea, "patchmatch": patchmatch_fill,
                              "preview": _Preview(args.strength), "noise": noise_fill}
    images = make_images(args.size, args.seed)
    records: list[dict[str, object]] = []
    rows = []
    t_start = time.perf_counter()
    for name in args.images.split(","):
        image = images[name]
        for shape, fraction in MASKS:
            hole = make_mask(shape, fraction, args.size, hole_centre(name), args.seed)
            label = f"{name} / {shape} {fraction:.0%}"
            outs, notes = {}, {}
            for method in METHODS:
                t0, c0 = time.perf_counter(), time.process_time()
                out = fills[method](image, hole, args.seed)
                ms, cpu = 1000 * (time.perf_counter() - t0), 1000 * (time.process_time() - c0)
                outs[method] = out
                rec = {"image": name, "mask": f"{shape} {fraction:.0%}", "hole": float(hole.mean()),
                       "method": method, "texture": texture_ratio(out, image, hole),
                       "patch": patch_distance(out, image, hole, seed=args.seed),
                       "de": delta_e(out, image, hole), "de_mean": mean_delta_e(out, image, hole),
                       "ms": ms, "cpu": cpu}
                records.append(rec)
                notes[method] = f"t{rec['texture']:.2f} p{rec['patch']:.1f}"
            rows.append((label, image, hole, outs, notes))
            print(f"  {label}: done", file=sys.stderr, flush=True)
    print(f"## Fill quality, {args.size}x{args.size}, seed {args.seed}, preview strength "
          f"{args.strength:g}\n")
    print(_table(records))
    print("\n## Summary over all cases\n")
    print(_summary(records))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    _sheet(rows, args.cell).save(args.out)
    print(f"\ncontact sheet: {args.out}  (total {time.perf_counter() - t_start:.1f} s)")


if __name__ == "__main__":
    main()
