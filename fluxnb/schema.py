"""The one schema of ``fal-ai/flux-lora/inpainting``: every field, its range and its default.

Everything that needs a bound or a default reads it from here (the :class:`Field` type and the
check of one value live in :mod:`fluxnb.fields`): the client validates with
:func:`validate_input` before any network call, the local server validates with the same function
and answers 422 in fal's ``{"detail": [{"loc", "msg", "type"}]}`` shape, and the notebook
widgets build their sliders from :data:`INPUT_FIELDS`.

>>> from fluxnb.schema import INPUT_FIELDS, validate_input
>>> INPUT_FIELDS["num_inference_steps"].maximum
50
>>> validate_input({"prompt": "a cat", "image_url": "https://x/i.png",
...                 "mask_url": "https://x/m.png"}, fill_defaults=True)["strength"]
0.85
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from .errors import ValidationError
from .fields import BAD, Field, check_value, fmt_number
from .fields import error_item as _err
from .fields import short_value as _short

__all__ = [
    "ALIASES",
    "COST_WARNING_USD",
    "ENDPOINT_ID",
    "IMAGE_SIZE_PRESETS",
    "INPUT_FIELDS",
    "LORA_SCALE",
    "MASK_ASPECT_TOLERANCE",
    "MASK_THRESHOLD",
    "MAX_IMAGE_SIDE",
    "OUTPUT_FIELDS",
    "OUTPUT_IMAGE_FIELDS",
    "PRICE_PER_MEGAPIXEL",
    "SEED_MAX",
    "Field",
    "estimate_cost",
    "flag_for",
    "markdown_table",
    "output_problems",
    "resolve_aliases",
    "resolve_image_size",
    "short_name",
    "validate_input",
]

#: The fal app id this project is built around (owner/app/path).
ENDPOINT_ID = "fal-ai/flux-lora/inpainting"

#: What fal publishes for this endpoint, in US dollars per output megapixel.
PRICE_PER_MEGAPIXEL = 0.035

#: On fal.ai, ``run``/``submit`` warn (once per client) when one job's estimated cost is at least
#: this many US dollars (a 6000x4000 image with 4 outputs: about $3.36).
COST_WARNING_USD = 1.0

#: Largest seed accepted (fal takes any int; 63 bits keeps numpy and torch generators happy).
SEED_MAX = 2**63 - 1

#: Largest width or height accepted in ``image_size`` (fal's ImageSize bound).
MAX_IMAGE_SIDE = 14142

#: Mask pixels at least this bright (mode ``L``) are repainted; a mask with none repaints nothing.
MASK_THRESHOLD = 128

#: How far (relative) a mask's aspect ratio may differ from the image's and still be resized to it.
MASK_ASPECT_TOLERANCE = 0.01

#: fal's named image sizes, as (width, height).
IMAGE_SIZE_PRESETS: Mapping[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}

#: A LoRA's scale, shared by the ``loras`` items, the server and the widgets.
LORA_SCALE = Field(
    "scale", "number", "How strongly the LoRA is applied.", label="LoRA scale",
    default=1.0, minimum=0.0, maximum=4.0, step=0.05,
)

#: Every input field, in the order fal documents them.
INPUT_FIELDS: Mapping[str, Field] = {
    f.name: f
    for f in (
        Field("prompt", "string", "The prompt to generate an image from (not blank).",
              label="Prompt", required=True, flag="--prompt"),
        Field("image_url", "url", "The image to inpaint: an http(s) URL or a data URI.",
              label="Image", required=True, short="image", flag="--image"),
        Field("mask_url", "url", "The mask: white (>=128) is repainted, black is kept.",
              label="Mask", required=True, short="mask", flag="--mask"),
        Field("num_inference_steps", "integer", "Denoising steps.", label="Steps",
              default=28, minimum=1, maximum=50, step=1, short="steps", flag="--steps"),
        Field("guidance_scale", "number", "How closely the model follows the prompt (CFG).",
              label="Guidance", default=3.5, minimum=0.0, maximum=35.0, step=0.1,
              short="guidance", aliases=("cfg",), flag="--guidance"),
        Field("strength", "number", "How much of the masked area is regenerated; 1.0 redraws it fully.",
              label="Strength", default=0.85, minimum=0.01, maximum=1.0, step=0.01,
              flag="--strength"),
        Field("num_images", "integer", "How many images to generate.", label="Images",
              default=1, minimum=1, maximum=4, step=1, short="images", flag="--num-images"),
        Field("enable_safety_checker", "boolean", "Run the safety checker on the outputs.",
              label="Safety checker", default=True, short="safety_checker"),
        Field("output_format", "choice", "Format of the output images.", label="Format",
              default="jpeg", choices=("jpeg", "png"), short="format", flag="--format"),
        Field("seed", "integer", "Seed for reproducible results; random when omitted.",
              label="Seed", default=None, minimum=0, maximum=SEED_MAX, step=1, flag="--seed"),
        Field("image_size", "image_size",
              "Output size: a preset name or {width, height}; the input size when omitted.",
              label="Image size", default=None, choices=tuple(IMAGE_SIZE_PRESETS), short="size",
              parts={side: Field(side, "integer", f"Output {side}.", default=512, minimum=1,
                                 maximum=MAX_IMAGE_SIDE) for side in ("width", "height")}),
        Field("loras", "loras", "LoRAs to apply: [{path, scale}].", label="LoRAs", default=(),
              flag="--lora", parts={"scale": LORA_SCALE}),
        Field("sync_mode", "boolean",
              "Return images as data URIs and keep them out of request history.",
              label="Sync mode", default=False),
    )
}

#: Every accepted short name or alias -> its schema field (``steps`` -> ``num_inference_steps``),
#: derived from each field's ``short`` and ``aliases``: the one alias table of the package.
ALIASES: Mapping[str, str] = {
    alias: spec.name
    for spec in INPUT_FIELDS.values()
    for alias in (spec.short, *spec.aliases)
    if alias and alias != spec.name
}


def short_name(name: str) -> str:
    """The short name of a field, for titles, table columns and axes (the name itself if none).

    >>> short_name("num_inference_steps"), short_name("strength"), short_name("lora_scale")
    ('steps', 'strength', 'lora_scale')
    """
    spec = INPUT_FIELDS.get(ALIASES.get(name, name))
    return (spec.short or spec.name) if spec is not None else name


def flag_for(name: str) -> str | None:
    """The ``fluxnb run`` option that sets a field (or alias), or None when there is none.

    >>> flag_for("num_inference_steps"), flag_for("steps"), flag_for("sync_mode")
    ('--steps', '--steps', None)
    """
    spec = INPUT_FIELDS.get(ALIASES.get(name, name))
    return (spec.flag or None) if spec is not None else None


def resolve_aliases(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with short names replaced by schema names (``steps`` -> ...).

    Giving an alias and its field (or two aliases of one field) is a ValidationError naming both.

    >>> resolve_aliases({"steps": 20, "guidance": 4.0, "prompt": "p"})
    {'num_inference_steps': 20, 'guidance_scale': 4.0, 'prompt': 'p'}
    """
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    errors: list[dict[str, Any]] = []
    for key, value in data.items():
        name = ALIASES.get(key, key) if isinstance(key, str) else key
        if name in given:
            errors.append(_err([name], f"{given[name]}={_short(out[name])!r} and {key}={_short(value)!r}"
                                       f" both set {name} ({given[name]!r} and {key!r} are one field):"
                                       " pass only one", "value_error", None))
            continue
        given[name] = key
        out[name] = value
    if errors:
        raise ValidationError(errors)
    return out


def estimate_cost(width: int, height: int, num_images: int = 1,
                  price_per_megapixel: float = PRICE_PER_MEGAPIXEL) -> float:
    """Estimated fal.ai cost in US dollars of one job with ``num_images`` outputs of that size.

    >>> round(estimate_cost(6000, 4000, 4), 2)
    3.36
    """
    return width * height / 1e6 * num_images * price_per_megapixel


#: Output fields fal always returns, and the fields of each output image.
OUTPUT_FIELDS = ("images", "timings", "seed", "has_nsfw_concepts", "prompt")
OUTPUT_IMAGE_FIELDS = ("url", "width", "height", "content_type")


def validate_input(
    data: Mapping[str, Any], *, fill_defaults: bool = False, allow_unknown: bool = False
) -> dict[str, Any]:
    """Check an input body against the schema and return a normalised copy.

    Every problem is collected, then raised together as :class:`~fluxnb.errors.ValidationError`
    whose ``errors`` are fal-shaped ``{"loc", "msg", "type"}`` items naming the field, the bad
    value and the allowed range. With ``fill_defaults`` the returned dict has every field that has
    a default. Unknown fields are an error (with a did-you-mean) unless ``allow_unknown``; then
    they are dropped from the result.

    >>> validate_input({"prompt": "p", "image_url": "https://a/b.png",
    ...                 "mask_url": "https://a/m.png", "strength": 2})
    Traceback (most recent call last):
    ...
    fluxnb.errors.ValidationError: strength=2 is out of range: allowed 0.01 to 1 (default 0.85)
    """
    if not isinstance(data, Mapping):
        raise ValidationError([_err([], f"the body must be a JSON object, not {type(data).__name__}",
                                    "model_type", data)])
    errors: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    for key, value in data.items():
        spec = INPUT_FIELDS.get(key) if isinstance(key, str) else None
        if spec is None:
            if not allow_unknown:
                errors.append(_unknown_field(key, value))
            continue
        if value is None and not spec.required:
            continue  # explicit null means "use the default", as fal's pydantic models do
        checked = check_value(spec, value, [key], errors)
        if checked is not BAD:
            out[key] = checked
    for spec in INPUT_FIELDS.values():
        if spec.required and spec.name not in out and not any(
            e["loc"][1:2] == [spec.name] for e in errors
        ):
            errors.append(_err([spec.name], f"{spec.name} is required", "missing", None))
        elif fill_defaults and spec.name not in out and spec.default is not None:
            out[spec.name] = list(spec.default) if spec.kind == "loras" else spec.default
    if errors:
        raise ValidationError(errors)
    return out


def resolve_image_size(value: Any, fallback: tuple[int, int]) -> tuple[int, int]:
    """The (width, height) an ``image_size`` value asks for, or ``fallback`` when it is None.

    >>> resolve_image_size("landscape_4_3", (10, 10))
    (1024, 768)
    """
    if value is None:
        return fallback
    if isinstance(value, str):
        return IMAGE_SIZE_PRESETS[value]
    return int(value.get("width", 512)), int(value.get("height", 512))


def output_problems(data: Any) -> list[str]:
    """What is missing or mistyped in an endpoint output (empty when it conforms).

    >>> output_problems({"images": [], "timings": {}, "seed": 1, "has_nsfw_concepts": [],
    ...                  "prompt": "p"})
    []
    """
    if not isinstance(data, Mapping):
        return ["output is not a JSON object"]
    problems = [f"missing field {name!r}" for name in OUTPUT_FIELDS if name not in data]
    images = data.get("images", [])
    if not isinstance(images, list):
        return problems + ["images is not a list"]
    for i, image in enumerate(images):
        if not isinstance(image, Mapping):
            problems.append(f"images[{i}] is not an object")
            continue
        problems += [f"images[{i}] has no {k!r}" for k in OUTPUT_IMAGE_FIELDS if k not in image]
    return problems


def markdown_table() -> str:
    """The input fields as a Markdown table (the README's parameter table is this text)."""
    rows = ["| field | allowed | default | required |", "|---|---|---|---|"]
    for spec in INPUT_FIELDS.values():
        if spec.kind in ("integer", "number"):
            allowed = spec.range_text() if spec.name != "seed" else "int >= 0"
        elif spec.kind == "choice":
            allowed = " \\| ".join(spec.choices)
        elif spec.kind == "image_size":
            allowed = " \\| ".join(spec.choices) + f" \\| {{width, height}} <= {MAX_IMAGE_SIDE}"
        elif spec.kind == "loras":
            scale = f"{LORA_SCALE.range_text()} (default {fmt_number(LORA_SCALE.default)})"
            allowed = f"[{{path, scale {scale}}}]"
        elif spec.kind == "url":
            allowed = "http(s) URL or data URI"
        else:
            allowed = spec.kind
        default = _default_text(spec)
        rows.append(f"| `{spec.name}` | {allowed} | {default} | {'yes' if spec.required else ''} |")
    return "\n".join(rows)


_NO_DEFAULT_TEXT = {"seed": "random", "image_size": "the input's size"}


def _default_text(spec: Field) -> str:
    if spec.name in _NO_DEFAULT_TEXT:
        return _NO_DEFAULT_TEXT[spec.name]
    if isinstance(spec.default, bool):
        return str(spec.default).lower()
    if isinstance(spec.default, (int, float)):
        return fmt_number(spec.default)
    if spec.default == ():
        return "[]"
    return "" if spec.default is None else str(spec.default)


def _unknown_field(key: Any, value: Any) -> dict[str, Any]:
    msg = f"unknown field {key!r}"
    if isinstance(key, str) and key in ALIASES:
        msg += f"; did you mean {ALIASES[key]!r}? ({key!r} is its short name in fluxnb's client)"
    elif isinstance(key, str):
        close = difflib.get_close_matches(key, list(INPUT_FIELDS), n=1)
        if close:
            msg += f"; did you mean {close[0]!r}?"
    return _err([key], msg + " (allowed: " + ", ".join(INPUT_FIELDS) + ")", "extra_forbidden", value)
