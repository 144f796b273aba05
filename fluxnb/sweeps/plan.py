"""From base inputs and axes to validated job inputs, and the pre-flight summary (jobs, cost, time).

Nothing here touches the network: images are encoded once, every cell is validated against the
schema, and :class:`Preflight` says what a sweep will cost before a job is sent.

>>> plan = build_plan({"prompt": "p", "image_url": "https://x/i.png", "mask_url": "https://x/m.png"},
...                   {"steps": [10, 20], "strength": "0.5-1 [3]"}, seeds=7)
>>> len(plan.cells), plan.cells[4].params, plan.cells[4].seed
(6, {'num_inference_steps': 20, 'strength': 0.75}, 7)
>>> print(plan.preflight(concurrency=4))
sweep: 6 jobs (6 images, 6.29 MP); est. cost $0.22 at $0.035/MP; est. time ~8 s at concurrency 4
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..datauri import decode_data_uri
from ..errors import FluxnbError, MaskMismatchError, ValidationError
from ..images import to_data_uri
from ..masks import check_mask
from ..schema import INPUT_FIELDS, PRICE_PER_MEGAPIXEL, resolve_image_size, validate_input
from .axes import LORA_SCALE_AXIS, axis_values, canonical_name, grid, resolve_seeds, sample_cells

__all__ = [
    "Cell",
    "ImageInput",
    "Plan",
    "Preflight",
    "SweepTooLargeError",
    "build_plan",
    "canonical_json",
]

_IMAGE_FIELDS = ("image_url", "mask_url")
#: Rough seconds per job when the caller gives none: FLUX inpainting on fal is about
#: 0.15 s per step per megapixel plus queue and transfer overhead. Only an estimate.
_STEP_SECONDS_PER_MP = 0.15
_JOB_OVERHEAD_S = 1.5
#: Shown in the summary and kept in the log as the image/mask "value": a short content hash.
_LABEL_HEX = 12


class SweepTooLargeError(FluxnbError, ValueError):
    """The sweep would send more jobs than ``max_jobs``; the message says how to go ahead."""


def canonical_json(value: Any) -> str:
    """Sorted-key, compact JSON: the same inputs always give the same text (and hash)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


@dataclass(frozen=True)
class ImageInput:
    """An image or mask as sent (``uri``: data URI or http(s) URL) and its identity.

    ``digest`` is the sha256 of the bytes for inline images (the URL's hash for http(s) URLs,
    whose content is not downloaded); ``label`` is the short form used in frames and titles.
    """

    uri: str
    digest: str
    label: str
    size: tuple[int, int] | None
    data: bytes | None = field(default=None, repr=False)


def _image_input(obj: Any, *, mask: bool) -> ImageInput:
    if isinstance(obj, str) and obj.startswith(("http://", "https://")):
        digest = hashlib.sha256(obj.encode()).hexdigest()
        short = obj if len(obj) <= 48 else obj[:45] + "..."
        return ImageInput(obj, "url:" + digest, short, None)
    uri = to_data_uri(obj, mask=mask)
    _, data = decode_data_uri(uri)
    digest = hashlib.sha256(data).hexdigest()
    size = None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            size = (int(img.width), int(img.height))
    except Exception:  # noqa: BLE001 - the server will say what is wrong with it
        size = None
    return ImageInput(uri, "sha256:" + digest, "sha256:" + digest[:_LABEL_HEX], size, data)


def _fitted_mask(mask: ImageInput, size: tuple[int, int] | None) -> ImageInput:
    """``mask`` checked with :func:`fluxnb.masks.check_mask` (an empty mask or another aspect
    ratio raises) and, when it is another size of the same aspect, resized to ``size``."""
    if mask.data is None:
        return mask  # an http(s) URL: not downloaded here; the server checks it
    fitted = check_mask(mask.data, size)
    return mask if fitted.size == mask.size else _image_input(fitted, mask=True)


@dataclass
class Cell:
    """One point of the sweep: its grid index, axis values, resolved seed and job inputs.

    ``params`` holds the axis values (labels for images), ``inputs`` the body sent (validated),
    ``key`` the sha256 of the inputs with images replaced by their content hash: equal keys
    mean the same job.
    """

    index: int
    params: dict[str, Any]
    seed: int
    inputs: dict[str, Any]
    key: str
    images: dict[str, ImageInput] = field(default_factory=dict, repr=False)

    def columns(self) -> dict[str, Any]:
        """Every input parameter as a frame column (images as their short content hash)."""
        out: dict[str, Any] = {}
        for name, value in validate_input(self.inputs, fill_defaults=True).items():
            if name in self.images:
                out[name] = self.images[name].label
            elif name == "loras":
                out[name] = canonical_json(value)
            elif name == "image_size" and not isinstance(value, str):
                out[name] = canonical_json(value)
            else:
                out[name] = value
        if LORA_SCALE_AXIS in self.params:
            out[LORA_SCALE_AXIS] = self.params[LORA_SCALE_AXIS]
        out["seed"] = self.seed
        return out

    def describe(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params.items()) or "base inputs"

    def megapixels(self) -> float:
        image = self.images.get("image_url")
        fallback = image.size if image is not None and image.size else (1024, 1024)
        width, height = resolve_image_size(self.inputs.get("image_size"), fallback)
        return width * height / 1e6 * int(self.inputs.get("num_images", 1))


@dataclass(frozen=True)
class Preflight:
    """What a sweep will do: jobs to send (after the folder's finished cells and cache hits), the
    estimated cost in dollars and the estimated time in seconds."""

    cells: int
    done: int
    cached: int
    jobs: int
    images: int
    megapixels: float
    cost: float
    seconds: float
    price_per_megapixel: float
    concurrency: int
    #: False on a free backend (a local or class server): the summary then names no cost.
    priced: bool = True

    def __str__(self) -> str:
        if not self.jobs and self.cells:
            where = []
            if self.done:
                where.append(f"{self.done} already done in this folder")
            if self.cached:
                where.append(f"{self.cached} from the cache")
            return f"sweep: nothing to send; {self.cells} cells: {', '.join(where)}"
        text = f"sweep: {self.jobs} job{'s' if self.jobs != 1 else ''}"
        skipped = []
        if self.done:
            skipped.append(f"{self.done} already done in this folder")
        if self.cached:
            skipped.append(f"{self.cached} from the cache")
        if skipped:
            text += f" of {self.cells} cells ({', '.join(skipped)})"
        text += f" ({self.images} images, {self.megapixels:.3g} MP); "
        if self.priced:
            text += f"est. cost {_money(self.cost)} at ${self.price_per_megapixel:g}/MP; "
        text += f"est. time ~{_duration(self.seconds)} at concurrency {self.concurrency}"
        return text


def _money(dollars: float) -> str:
    return f"${dollars:.2f}" if dollars >= 0.01 or dollars == 0 else f"${dollars:.4f}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class Plan:
    """Every cell of a sweep, validated, plus what is needed to describe it."""

    axes: dict[str, list[Any]]
    cells: list[Cell]
    n_grid: int
    random_state: int
    seed_policy: Any
    base: dict[str, Any]
    price_per_megapixel: float = PRICE_PER_MEGAPIXEL
    seconds_per_job: float | None = None

    def preflight(self, *, concurrency: int, done: int = 0, cached: int = 0,
                  pending: list[Cell] | None = None, priced: bool = True) -> Preflight:
        """The summary for sending ``pending`` (default: every cell) with ``concurrency`` jobs at
        once; ``priced=False`` (a backend that is not fal.ai) leaves the cost out of its text."""
        todo = self.cells if pending is None else pending
        mp = sum(c.megapixels() for c in todo)
        images = sum(int(c.inputs.get("num_images", 1)) for c in todo)
        if self.seconds_per_job is not None:
            per_job = [self.seconds_per_job] * len(todo)
        else:
            per_job = [_JOB_OVERHEAD_S + _STEP_SECONDS_PER_MP * int(c.inputs.get(
                "num_inference_steps", INPUT_FIELDS["num_inference_steps"].default)) * c.megapixels()
                for c in todo]
        waves = math.ceil(len(todo) / max(1, concurrency))
        seconds = (sum(per_job) / len(todo) * waves) if todo else 0.0
        return Preflight(cells=len(self.cells), done=done, cached=cached, jobs=len(todo),
                         images=images, megapixels=mp, cost=mp * self.price_per_megapixel,
                         seconds=seconds, price_per_megapixel=self.price_per_megapixel,
                         concurrency=concurrency, priced=priced)

    def check_size(self, preflight: Preflight, max_jobs: int | None) -> None:
        """Raise SweepTooLargeError when more than ``max_jobs`` jobs would be sent."""
        if max_jobs is not None and preflight.jobs > max_jobs:
            raise SweepTooLargeError(
                f"this sweep would send {preflight.jobs} jobs ("
                + (f"est. {_money(preflight.cost)}, " if preflight.priced else "")
                + f"~{_duration(preflight.seconds)}), more than max_jobs={max_jobs}. To go ahead pass "
                f"max_jobs={preflight.jobs} (or max_jobs=None); sample=N runs a random subset.")

    def describe(self) -> dict[str, Any]:
        """A JSON-safe description (axes, base inputs, seeds): for the run folder and PNG chunks."""
        return {
            "axes": self.axes,
            "base": self.base,
            "seed_policy": self.seed_policy if not isinstance(self.seed_policy, (list, tuple))
            else "explicit",
            "random_state": self.random_state,
            "grid_cells": self.n_grid,
            "cells": [{"cell": c.index, "key": c.key, "params": c.params, "seed": c.seed}
                      for c in self.cells],
        }


def _label(name: str, value: Any, images: dict[int, ImageInput]) -> Any:
    if name in _IMAGE_FIELDS:
        return images[id(value)].label
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return canonical_json(value)


def build_plan(
    base_inputs: Mapping[str, Any],
    axes: Mapping[str, Any],
    *,
    seeds: Any = None,
    sample: int | None = None,
    random_state: int | None = None,
    price_per_megapixel: float = PRICE_PER_MEGAPIXEL,
    seconds_per_job: float | None = None,
) -> Plan:
    """Cells of the grid (or a seeded sample of ``sample`` cells), each validated; an invalid cell
    raises ValidationError naming the cell's parameters and the field at fault (a mask that
    repaints nothing too, and a mask of another aspect ratio than its image: MaskMismatchError;
    a mask of another size but the same aspect is resized to its image)."""
    if not isinstance(base_inputs, Mapping):
        raise TypeError(f"base_inputs must be a mapping of field -> value, not {type(base_inputs).__name__}")
    base = {canonical_name(k): v for k, v in base_inputs.items()}
    values = {canonical_name(k): axis_values(k, v) for k, v in axes.items()}
    if len(values) != len(axes):
        raise ValueError(f"two axes name the same field: {sorted(axes)}")
    if "seed" in values and seeds is not None:
        raise ValueError("seed is an axis, so seeds= (the seed policy) cannot also be given")
    if LORA_SCALE_AXIS in base:
        raise ValueError("lora_scale is an axis only; put the LoRAs in base_inputs['loras']")
    if LORA_SCALE_AXIS in values and not base.get("loras"):
        raise ValueError("the lora_scale axis needs base_inputs['loras'] (a list of {path, scale})")
    encoded: dict[int, ImageInput] = {}

    def encode(name: str, obj: Any) -> ImageInput:
        if id(obj) not in encoded:
            encoded[id(obj)] = _image_input(obj, mask=name == "mask_url")
        return encoded[id(obj)]

    fitted: dict[tuple[str, tuple[int, int] | None], ImageInput | ValidationError] = {}

    def fit(mask: ImageInput, image: ImageInput | None) -> ImageInput:
        """The cell's mask, refused when it repaints nothing and fitted to the cell's image."""
        key = (mask.digest, image.size if image is not None else None)
        if key not in fitted:
            try:
                fitted[key] = _fitted_mask(mask, key[1])
            except ValidationError as exc:
                fitted[key] = exc
        found = fitted[key]
        if isinstance(found, ValidationError):
            raise found
        return found

    for name in _IMAGE_FIELDS:
        for obj in values.get(name, [base[name]] if base.get(name) is not None else []):
            encode(name, obj)
    label_axes = {name: [_label(name, v, encoded) for v in vals] for name, vals in values.items()}

    if random_state is None:
        # derived from the sweep itself: the same sweep draws the same seeds and sample, so a
        # rerun resumes and hits the cache; pass random_state for a different draw
        # (from the base inputs only, so adding axis values keeps the seeds of existing cells)
        spec = {"base": {k: (encoded[id(v)].digest if k in _IMAGE_FIELDS and id(v) in encoded else v)
                         for k, v in base.items()}, "seeds": seeds}
        random_state = int(hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:8], 16)

    combos = grid(values)
    chosen = sample_cells(len(combos), sample, random_state)
    base_seed = base.get("seed")
    if "seed" in values:
        cell_seeds = [int(combos[i]["seed"]) for i in chosen]
    else:
        keys = [canonical_json({k: (encoded[id(v)].digest if k in _IMAGE_FIELDS else v)
                                for k, v in combos[i].items()}) for i in chosen]
        cell_seeds = resolve_seeds(len(chosen), seeds, random_state=random_state, keys=keys,
                                   base_seed=int(base_seed) if base_seed is not None else None)

    cells: list[Cell] = []
    problems: list[dict[str, Any]] = []
    bad_cells = 0
    for index, seed in zip(chosen, cell_seeds, strict=True):
        combo = combos[index]
        body = {k: v for k, v in base.items()}
        images: dict[str, ImageInput] = {}
        for name, value in combo.items():
            if name == LORA_SCALE_AXIS:
                body["loras"] = [{**dict(lora), "scale": value} for lora in base["loras"]]
            else:
                body[name] = value
        for name in _IMAGE_FIELDS:
            if body.get(name) is not None:
                images[name] = encode(name, body[name])
                body[name] = images[name].uri
        body["seed"] = seed
        params = {name: _label(name, combo[name], encoded) for name in combo}
        try:
            if "mask_url" in images:
                images["mask_url"] = fit(images["mask_url"], images.get("image_url"))
                body["mask_url"] = images["mask_url"].uri
            inputs = validate_input(body)
        except ValidationError as exc:
            bad_cells += 1
            if bad_cells <= 10:
                where = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "base inputs"
                for err in exc.errors:
                    problems.append({**err, "msg": f"cell {index} ({where}): {err.get('msg')}",
                                     "cell": index})
            continue
        identity = {k: (images[k].digest if k in images else v) for k, v in inputs.items()}
        key = hashlib.sha256(canonical_json(identity).encode()).hexdigest()
        cells.append(Cell(index=index, params=params, seed=seed, inputs=inputs, key=key,
                          images=images))
    if problems:
        if bad_cells > 10:
            problems.append({"loc": ["body"], "msg": f"... and {bad_cells - 10} more invalid cells",
                             "type": "value_error"})
        mismatch = all(p.get("type") == "mask_mismatch" for p in problems if "cell" in p)
        raise (MaskMismatchError if mismatch else ValidationError)(problems)
    base_desc = {k: (encoded[id(v)].label if k in _IMAGE_FIELDS and id(v) in encoded else v)
                 for k, v in base.items()}
    return Plan(axes=label_axes, cells=cells, n_grid=len(combos), random_state=random_state,
                seed_policy=seeds if seeds is not None else ("axis" if "seed" in values else "fixed"),
                base=json.loads(canonical_json(base_desc)), price_per_megapixel=price_per_megapixel,
                seconds_per_job=seconds_per_job)
