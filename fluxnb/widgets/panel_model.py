"""The panel's logic without widgets: slider specs from the schema, payload building, status text.

Everything here is pure, so most of the panel is tested without a kernel or a server.

>>> slider_spec("num_inference_steps")
{'min': 1, 'max': 50, 'step': 1, 'value': 28}
>>> snap("guidance_scale", 3.46)
3.5
>>> build_params({"prompt": "a fox", "num_inference_steps": 20.0, "strength": 0.851})
{'prompt': 'a fox', 'num_inference_steps': 20, 'strength': 0.85}
>>> describe_status(Queued(position=2))
('in queue: position 2', None)
>>> mask_problem(Image.new("L", (4, 4), 76))[:59]
'the mask repaints nothing: the brightest mask pixel is 76; '
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from ..masks import empty_mask_reason
from ..protocol import InProgress, Queued, Status, progress_from_logs
from ..schema import INPUT_FIELDS, LORA_SCALE, Field, validate_input

__all__ = ["SLIDER_FIELDS", "build_params", "describe_status", "mask_problem", "slider_spec", "snap"]

#: The fields the panel shows as sliders, in order.
SLIDER_FIELDS = ("num_inference_steps", "guidance_scale", "strength", "num_images")

# placeholders that satisfy the schema's url check while the real images travel separately
_PLACEHOLDER = "data:image/png;base64,"


def _field(name: str) -> Field:
    return LORA_SCALE if name == "lora_scale" else INPUT_FIELDS[name]


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step))) if step < 1 else 0


def slider_spec(name: str) -> dict[str, Any]:
    """``min``, ``max``, ``step`` and ``value`` (the default) of a numeric field, from the schema.

    ``"lora_scale"`` gives the LoRA scale's spec.
    """
    spec = _field(name)
    if spec.minimum is None or spec.maximum is None or spec.step is None:
        raise ValueError(f"{name} is not a bounded numeric field")
    if spec.kind == "integer":
        return {"min": int(spec.minimum), "max": int(spec.maximum), "step": int(spec.step),
                "value": int(spec.default)}
    return {"min": float(spec.minimum), "max": float(spec.maximum), "step": float(spec.step),
            "value": float(spec.default)}


def snap(name: str, value: Any) -> Any:
    """A slider value rounded to the field's step (the browser snaps, Python does not).

    Values outside the range are left for validation to report, never silently clamped.
    """
    spec = _field(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or spec.step is None:
        return value
    if not math.isfinite(value):
        return value
    if spec.kind == "integer":
        return int(round(value))
    lo = spec.minimum or 0.0
    snapped = lo + round((value - lo) / spec.step) * spec.step
    return round(snapped, _decimals(spec.step))


def build_params(values: Mapping[str, Any], *, loras: Sequence[tuple[str, float]] = ()) -> dict[str, Any]:
    """Validated job parameters (everything but the images) from control values.

    Numbers are snapped to their step, a ``None`` seed is dropped, LoRA rows with an empty path
    are skipped. Raises :class:`~fluxnb.errors.ValidationError` naming the field, the value and
    the allowed range; an empty prompt is an error here too.
    """
    params: dict[str, Any] = {}
    for name, value in values.items():
        if name == "seed" and value is None:
            continue
        params[name] = snap(name, value) if name in INPUT_FIELDS else value
    rows = [{"path": path.strip(), "scale": snap("lora_scale", scale)} for path, scale in loras
            if isinstance(path, str) and path.strip()]
    if rows:
        params["loras"] = rows
    # a blank prompt is refused by the schema (one rule with the client and the server)
    checked = validate_input({**params, "image_url": _PLACEHOLDER, "mask_url": _PLACEHOLDER})
    return {k: v for k, v in checked.items() if k not in ("image_url", "mask_url")}


def describe_status(status: Status) -> tuple[str, tuple[int, int] | None]:
    """The status line and ``(done, total)`` progress for one queue status."""
    if isinstance(status, Queued):
        return f"in queue: position {status.position}", None
    if isinstance(status, InProgress):
        progress = progress_from_logs(status.logs)
        last = status.logs[-1].message if status.logs else ""
        return ("running" + (f": {last}" if last else "")), progress
    if status.error is not None:  # Completed
        return f"failed: {status.error}", progress_from_logs(status.logs)
    return "completed: fetching the images", progress_from_logs(status.logs)


def mask_problem(mask: Image.Image) -> str | None:
    """Why ``mask`` would repaint nothing (no pixel is white, >= 128), or None when it is usable.

    The client's rule (:func:`fluxnb.masks.empty_mask_reason`); the panel disables Run and shows
    this text, with a hint at the painter.
    """
    reason = empty_mask_reason(mask)
    return None if reason is None else f"{reason}; or click Paint mask and paint the area"
