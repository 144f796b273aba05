"""Sweep axes: value lists from lists, numpy ranges or AUTOMATIC1111-style strings; the grid or a
seeded random sample of it; seed policies. Pure: no I/O.

>>> parse_values("1-5 (+2)")
[1, 3, 5]
>>> parse_values("1-10 [4]")
[1, 4, 7, 10]
>>> parse_values("0.5-1 [3], 0.25")
[0.5, 0.75, 1.0, 0.25]
>>> grid({"steps": [1, 2], "strength": [0.5, 1.0]})
[{'steps': 1, 'strength': 0.5}, {'steps': 1, 'strength': 1.0}, {'steps': 2, 'strength': 0.5}, {'steps': 2, 'strength': 1.0}]
>>> resolve_seeds(3, 7)
[7, 7, 7]
"""  # noqa: E501 - the grid example is one line of output

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..schema import ALIASES, INPUT_FIELDS, SEED_MAX

__all__ = [
    "ALIASES",
    "LORA_SCALE_AXIS",
    "PROMPT_SR_AXIS",
    "SEED_POLICIES",
    "axis_values",
    "canonical_name",
    "grid",
    "lora_list",
    "parse_values",
    "resolve_seeds",
    "sample_cells",
]

# ALIASES (``steps=...`` means ``num_inference_steps=...``) is the schema's one alias table,
# re-exported here for the sweep code that has always imported it from this module.

#: Not a schema field: the scale applied to every LoRA in ``loras``.
LORA_SCALE_AXIS = "lora_scale"

#: Not a schema field: prompt search-and-replace (A1111's Prompt S/R). The first value is
#: searched in the prompt and every value replaces it, so the first cell keeps the prompt.
PROMPT_SR_AXIS = "prompt_sr"

#: The axes that are not schema fields.
_EXTRA_AXES = (LORA_SCALE_AXIS, PROMPT_SR_AXIS)

#: Named seed policies (besides an int, fixed for every cell, and an explicit list).
SEED_POLICIES = ("fixed", "per_cell")

_UNSIGNED = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_NUM = rf"[+-]?{_UNSIGNED}"
_RANGE = re.compile(rf"^\s*({_NUM})\s*-\s*({_NUM})\s*(?:\(\s*({_NUM})\s*\)|\[\s*(\d+)\s*\])?\s*$")
_NUMBER = re.compile(rf"^\s*{_NUM}\s*$")


def canonical_name(name: str) -> str:
    """The schema field an axis name means (aliases resolved); a ValueError names unknown ones.

    >>> canonical_name("steps")
    'num_inference_steps'
    """
    name = ALIASES.get(name, name)
    if name in INPUT_FIELDS or name in _EXTRA_AXES:
        return name
    import difflib

    known = sorted({*INPUT_FIELDS, *ALIASES, *_EXTRA_AXES})
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown sweep axis {name!r}{hint} (axes: {', '.join(known)})")


def _number(text: str) -> int | float:
    value = float(text)
    if re.fullmatch(r"\s*[+-]?\d+\s*", text):
        return int(text)
    return value


def _linspace(a: float, b: float, n: int, integer: bool) -> list[Any]:
    if n < 1:
        raise ValueError(f"a range needs a count >= 1, not [{n}]")
    if n == 1:
        return [int(a) if integer else float(a)]
    values = [a + (b - a) * i / (n - 1) for i in range(n)]
    if integer:
        out: list[Any] = []
        for v in values:
            r = int(v + 1e-9) if v >= 0 else int(v - 1e-9)  # truncated, as A1111's astype(int)
            if r not in out:
                out.append(r)
        return out
    return [round(v, 10) for v in values]


def _arange(a: float, b: float, step: float, integer: bool) -> list[Any]:
    if step == 0:
        raise ValueError("a range step cannot be 0")
    if (b - a) * step < 0:
        raise ValueError(f"the step {step:+g} never reaches {b:g} from {a:g}")
    count = int((b - a) / step + 1e-9) + 1
    return [int(a + i * step) if integer else round(a + i * step, 10) for i in range(count)]


def parse_values(text: str) -> list[Any]:
    """AUTOMATIC1111's X/Y/Z value syntax: comma-separated items, each a number, a range ``a-b``
    (step 1), ``a-b (+s)`` (step ``s``), ``a-b [n]`` (``n`` values, evenly spaced), or text.

    >>> parse_values("10-20 (+5), 40")
    [10, 15, 20, 40]
    >>> parse_values("3.5")
    [3.5]
    """
    out: list[Any] = []
    for item in text.split(","):
        if not item.strip():
            continue
        match = _RANGE.match(item)
        if match:
            a_text, b_text, step_text, count_text = match.groups()
            integer = all(re.fullmatch(r"\s*[+-]?\d+\s*", t) for t in (a_text, b_text)) and (
                step_text is None or re.fullmatch(r"[+-]?\d+", step_text.strip()) is not None)
            a, b = float(a_text), float(b_text)
            if count_text is not None:
                out += _linspace(a, b, int(count_text), integer)
            else:
                step = float(step_text) if step_text is not None else (1.0 if b >= a else -1.0)
                out += _arange(a, b, step, integer)
        elif _NUMBER.match(item):
            out.append(_number(item.strip()))
        else:
            out.append(item.strip())
    if not out:
        raise ValueError(f"no values in {text!r}")
    return out


def _plain(value: Any) -> Any:
    """numpy scalars become Python numbers (so they serialise and compare as numbers)."""
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def axis_values(name: str, spec: Any) -> list[Any]:
    """The list of values one axis takes: a list/tuple/range/numpy array as is, an A1111 string
    parsed for numeric fields (a string is one value for text fields), anything else one value.

    >>> axis_values("strength", "0.5-1 [3]")
    [0.5, 0.75, 1.0]
    >>> axis_values("prompt", "a cat, on a mat")
    ['a cat, on a mat']
    >>> axis_values("prompt_sr", "lion, tiger")
    ['lion', 'tiger']
    """
    if name == PROMPT_SR_AXIS:
        return _sr_values(spec)
    if ALIASES.get(name, name) == "loras":
        return _lora_values(spec)
    field = INPUT_FIELDS.get(ALIASES.get(name, name))
    numeric = name == LORA_SCALE_AXIS or (field is not None and field.kind in ("integer", "number"))
    if isinstance(spec, str):
        values = parse_values(spec) if numeric else [spec]
    elif isinstance(spec, (list, tuple, range)):
        values = [_plain(v) for v in spec]
    elif type(spec).__module__ == "numpy" and getattr(spec, "ndim", 0) == 1:
        values = [_plain(v) for v in spec.tolist()]
    else:
        values = [_plain(spec)]
    if not values:
        raise ValueError(f"axis {name!r} has no values")
    return values


def _sr_values(spec: Any) -> list[str]:
    """prompt_sr values: a list of texts, or one comma-separated text (as A1111 writes it)."""
    values = [v.strip() for v in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not values or not all(isinstance(v, str) for v in values) or not values[0]:
        raise ValueError(f"prompt_sr={spec!r} must be a list of texts whose first is the word to "
                         "replace in the prompt, e.g. prompt_sr=['lion', 'tiger', 'fox']")
    return values


def lora_list(value: Any) -> list[dict[str, Any]]:
    """One value of a ``loras`` axis as a ``loras`` list: None or ``[]`` (no LoRA), a path, a
    ``{path, scale}`` item or a list of either. Items at scale 0 are left out (no LoRA).

    >>> lora_list(None), lora_list("a.safetensors")
    ([], [{'path': 'a.safetensors', 'scale': 1.0}])
    >>> lora_list([{"path": "b.safetensors", "scale": 0.8}, {"path": "c.safetensors", "scale": 0}])
    [{'path': 'b.safetensors', 'scale': 0.8}]
    """
    items = [] if value is None else [value] if isinstance(value, (str, Mapping)) else value
    if not isinstance(items, (list, tuple)):
        items = [items]   # refused below, by name
    out: list[dict[str, Any]] = []
    for item in items:
        lora = {"path": item} if isinstance(item, str) else dict(item) if isinstance(item, Mapping) \
            else None
        if lora is None or not isinstance(lora.get("path"), str):
            raise ValueError(f"a loras axis value is a LoRA path, a {{path, scale}} item, a list of "
                             f"them or None (no LoRA), not {item!r}")
        scale = lora.get("scale", 1.0)
        if isinstance(scale, (int, float)) and not isinstance(scale, bool):
            if scale == 0:
                continue
            lora["scale"] = float(scale)   # as validation writes it: labels match frame columns
        out.append(lora)
    return out


def _lora_values(spec: Any) -> list[list[dict[str, Any]]]:
    """A ``loras`` axis: each item of the list is one value (see :func:`lora_list`): a path, an
    item, a list of items (several LoRAs at once) or None; a lone path or None is one value."""
    if spec is None or isinstance(spec, (str, Mapping)):
        return [lora_list(spec)]
    values = [lora_list(v) for v in spec]
    if not values:
        raise ValueError("axis 'loras' has no values")
    return values


def grid(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination, the first axis outermost and the last innermost (like nested loops)."""
    names = list(axes)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes.values())]


def sample_cells(n_cells: int, n: int | None, random_state: int | None) -> list[int]:
    """Indices of the cells to run: all of them, or ``n`` drawn without replacement with
    ``random_state`` and kept in grid order.

    >>> sample_cells(10, 3, random_state=0)
    [0, 6, 9]
    """
    if n is None or n >= n_cells:
        return list(range(n_cells))
    if n < 1:
        raise ValueError(f"sample={n} must be >= 1")
    return sorted(random.Random(random_state).sample(range(n_cells), n))


def resolve_seeds(n: int, policy: Any, *, random_state: int | None = None,
                  base_seed: int | None = None, keys: Sequence[str] | None = None) -> list[int]:
    """One seed per cell.

    ``policy`` is an int (that seed for every cell), ``"fixed"`` (the base inputs' seed, else
    one seed drawn once and shared, like A1111's default), ``"per_cell"`` (a new seed for every
    cell; like A1111's "keep -1 for seeds") or a list with one seed per cell. Draws use
    ``random_state`` so a seeded sweep is reproducible; with ``keys`` (one text per cell, e.g. its
    parameters) a per-cell seed depends only on its cell, so growing the grid keeps old seeds.

    >>> resolve_seeds(2, [5, 9])
    [5, 9]
    >>> len(set(resolve_seeds(4, "per_cell", random_state=1)))
    4
    """
    rng = random.Random(random_state)
    if policy is None or policy == "fixed":
        seed = base_seed if base_seed is not None else rng.randrange(2**32)
        return [int(seed)] * n
    if isinstance(policy, bool):
        raise ValueError(f"seeds={policy!r} is not a seed policy")
    if isinstance(policy, int) or (type(policy).__module__ == "numpy" and hasattr(policy, "item")
                                   and getattr(policy, "ndim", 1) == 0):
        return [_check_seed(_plain(policy))] * n
    if policy == "per_cell" and keys is not None:
        if len(keys) != n:
            raise ValueError(f"{len(keys)} keys for {n} cells")
        return [int(hashlib.sha256(f"{random_state}:{k}".encode()).hexdigest()[:8], 16) for k in keys]
    if policy == "per_cell":
        seeds: list[int] = []
        seen: set[int] = set()
        while len(seeds) < n:
            s = rng.randrange(2**32)
            if s not in seen:
                seen.add(s)
                seeds.append(s)
        return seeds
    if isinstance(policy, str):
        raise ValueError(f"seeds={policy!r} is not a seed policy: an int, 'fixed', 'per_cell' "
                         "or a list with one seed per cell")
    values = [_check_seed(_plain(s)) for s in policy]
    if len(values) != n:
        raise ValueError(f"seeds has {len(values)} entries but the sweep has {n} cells; give one "
                         "seed per cell")
    return values


def _check_seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise ValueError(f"seed {value!r} must be an integer from 0 to {SEED_MAX}")
    return value
