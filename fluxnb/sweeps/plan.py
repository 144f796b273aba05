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
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import MaskMismatchError, SweepTooLargeError, ValidationError
from ..schema import INPUT_FIELDS, PRICE_PER_MEGAPIXEL, resolve_image_size, validate_input
from .axes import (
    LORA_SCALE_AXIS,
    PROMPT_SR_AXIS,
    axis_values,
    canonical_name,
    grid,
    resolve_seeds,
    sample_cells,
)
from .inputs import IMAGE_FIELDS, ImageBook, ImageInput, canonical_json

__all__ = [
    "Cell",
    "ImageInput",
    "Plan",
    "Preflight",
    "SweepTooLargeError",
    "build_plan",
    "canonical_json",
]

#: Rough seconds per job when the caller gives none: FLUX inpainting on fal is about
#: 0.15 s per step per megapixel plus queue and transfer overhead. Only an estimate.
_STEP_SECONDS_PER_MP = 0.15
_JOB_OVERHEAD_S = 1.5


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
            elif name == "loras":   # as the axis names it when an axis (lora_scale may drop it)
                out[name] = self.params.get(name, canonical_json(value))
            elif name == "image_size" and not isinstance(value, str):
                out[name] = canonical_json(value)
            else:
                out[name] = value
        for name in (LORA_SCALE_AXIS, PROMPT_SR_AXIS):
            if name in self.params:
                out[name] = self.params[name]
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


def _axis_values(base: Mapping[str, Any], axes: Mapping[str, Any], seeds: Any) -> dict[str, list[Any]]:
    """Every axis by its canonical name, as a list of values; the combinations that cannot be."""
    values = {canonical_name(k): axis_values(k, v) for k, v in axes.items()}
    if len(values) != len(axes):
        raise ValueError(f"two axes name the same field: {sorted(axes)}")
    if "seed" in values and seeds is not None:
        raise ValueError("seed is an axis, so seeds= (the seed policy) cannot also be given")
    for name in (LORA_SCALE_AXIS, PROMPT_SR_AXIS):
        if name in base:
            raise ValueError(f"{name} is an axis only; give it as fluxnb.sweep(..., {name}=[...])")
    if LORA_SCALE_AXIS in values and not base.get("loras") and "loras" not in values:
        raise ValueError("the lora_scale axis needs base_inputs['loras'] (a list of {path, scale}) "
                         "or a loras axis")
    if PROMPT_SR_AXIS in values:
        _check_prompt_sr(values[PROMPT_SR_AXIS][0], values.get("prompt", [base.get("prompt")]))
    return values


def _check_prompt_sr(word: str, prompts: list[Any]) -> None:
    """The first prompt_sr value must be in every prompt (it is what each value replaces)."""
    for prompt in prompts:
        if not isinstance(prompt, str) or word not in prompt:
            raise ValueError(
                f"prompt_sr: {word!r} is not in the prompt {prompt!r}; the first prompt_sr value is "
                "the text that every value replaces, so it must appear in the prompt (e.g. "
                "prompt='a lion on a rock', prompt_sr=['lion', 'tiger', 'fox'])")


def _default_random_state(base: Mapping[str, Any], seeds: Any, book: ImageBook) -> int:
    """Derived from the sweep itself: the same sweep draws the same seeds and sample, so a rerun
    resumes and hits the cache (pass random_state for a different draw). From the base inputs
    only, so adding axis values keeps the seeds of existing cells."""
    spec = {"base": {k: book.identity(k, v) for k, v in base.items()}, "seeds": seeds}
    return int(hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:8], 16)


def _cell_seeds(combos: list[dict[str, Any]], chosen: list[int], seeds: Any, random_state: int,
                base: Mapping[str, Any], book: ImageBook, *, seed_axis: bool) -> list[int]:
    """The seed of every chosen cell: from the seed axis, else by the seed policy ``seeds``."""
    if seed_axis:
        return [int(combos[i]["seed"]) for i in chosen]
    keys = [canonical_json({k: book.identity(k, v) for k, v in combos[i].items()}) for i in chosen]
    base_seed = base.get("seed")
    return resolve_seeds(len(chosen), seeds, random_state=random_state, keys=keys,
                         base_seed=int(base_seed) if base_seed is not None else None)


def _make_cell(index: int, seed: int, combo: Mapping[str, Any], params: dict[str, Any],
               base: Mapping[str, Any], book: ImageBook, sr_from: str | None = None) -> Cell:
    """The cell at grid ``index``: its body validated (ValidationError when it is not valid)."""
    body = dict(base)
    images: dict[str, ImageInput] = {}
    for name, value in combo.items():
        if name not in (LORA_SCALE_AXIS, PROMPT_SR_AXIS):
            body[name] = value
    if LORA_SCALE_AXIS in combo:   # scale 0: the job runs without the LoRAs at all
        scale = combo[LORA_SCALE_AXIS]
        body["loras"] = [] if scale == 0 else [{**dict(lora), "scale": scale} for lora in body["loras"]]
    if sr_from is not None and isinstance(body.get("prompt"), str):
        body["prompt"] = body["prompt"].replace(sr_from, combo[PROMPT_SR_AXIS])
    for name in IMAGE_FIELDS:
        if body.get(name) is not None:
            images[name] = book.encode(name, body[name])
            body[name] = images[name].uri
    body["seed"] = seed
    if "mask_url" in images:
        images["mask_url"] = book.fit(images["mask_url"], images.get("image_url"))
        body["mask_url"] = images["mask_url"].uri
    inputs = validate_input(body)
    identity = {k: (images[k].digest if k in images else v) for k, v in inputs.items()}
    key = hashlib.sha256(canonical_json(identity).encode()).hexdigest()
    return Cell(index=index, params=params, seed=seed, inputs=inputs, key=key, images=images)


class _Problems:
    """The errors of the invalid cells: the first ten in full, then a count."""

    def __init__(self) -> None:
        self.problems: list[dict[str, Any]] = []
        self.bad_cells = 0

    def add(self, index: int, params: Mapping[str, Any], exc: ValidationError) -> None:
        self.bad_cells += 1
        if self.bad_cells <= 10:
            where = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "base inputs"
            for err in exc.errors:
                self.problems.append({**err, "msg": f"cell {index} ({where}): {err.get('msg')}",
                                      "cell": index})

    def raise_any(self) -> None:
        if not self.problems:
            return
        if self.bad_cells > 10:
            self.problems.append({"loc": ["body"], "type": "value_error",
                                  "msg": f"... and {self.bad_cells - 10} more invalid cells"})
        mismatch = all(p.get("type") == "mask_mismatch" for p in self.problems if "cell" in p)
        raise (MaskMismatchError if mismatch else ValidationError)(self.problems)


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
    values = _axis_values(base, axes, seeds)
    book = ImageBook()
    for name in IMAGE_FIELDS:
        for obj in values.get(name, [base[name]] if base.get(name) is not None else []):
            book.encode(name, obj)
    label_axes = {name: [book.label(name, v) for v in vals] for name, vals in values.items()}
    if random_state is None:
        random_state = _default_random_state(base, seeds, book)
    combos = grid(values)
    chosen = sample_cells(len(combos), sample, random_state)
    cells: list[Cell] = []
    problems = _Problems()
    sr_from = values[PROMPT_SR_AXIS][0] if PROMPT_SR_AXIS in values else None
    cell_seeds = _cell_seeds(combos, chosen, seeds, random_state, base, book, seed_axis="seed" in values)
    for index, seed in zip(chosen, cell_seeds, strict=True):
        params = {name: book.label(name, value) for name, value in combos[index].items()}
        try:
            cells.append(_make_cell(index, seed, combos[index], params, base, book, sr_from))
        except ValidationError as exc:
            problems.add(index, params, exc)
    problems.raise_any()
    base_desc = {k: book.describe(k, v) for k, v in base.items()}
    return Plan(axes=label_axes, cells=cells, n_grid=len(combos), random_state=random_state,
                seed_policy=seeds if seeds is not None else ("axis" if "seed" in values else "fixed"),
                base=json.loads(canonical_json(base_desc)), price_per_megapixel=price_per_megapixel,
                seconds_per_job=seconds_per_job)
