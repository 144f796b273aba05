"""A field spec (:class:`Field`) and how one value is checked against it, collecting fal-shaped
``{"loc", "msg", "type", "input", "ctx"}`` error items (kernel; knows no endpoint).

:mod:`fluxnb.schema` holds this endpoint's fields, ranges, defaults and alias table, built from
:class:`Field`, and its :func:`~fluxnb.schema.validate_input` checks each value with
:func:`check_value`. ``fluxnb.schema.Field`` stays importable.

>>> steps = Field("steps", "integer", "Denoising steps.", default=28, minimum=1, maximum=50)
>>> errors = []; check_value(steps, 8.0, ["steps"], errors), errors
(8, [])
>>> check_value(steps, 99, ["steps"], errors) is BAD, errors[0]["msg"]
(True, 'steps=99 is out of range: allowed 1 to 50 (default 28)')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BAD", "Field", "check_value", "error_item", "fmt_number", "short_value", "where"]

#: What a check returns for a value it refused (the reason is appended to ``errors``).
BAD: Any = object()

_URL_PREFIXES = ("http://", "https://", "data:")


@dataclass(frozen=True)
class Field:
    """One input field: its type, bounds, default and the label a widget shows.

    ``kind`` is one of ``string``, ``url``, ``integer``, ``number``, ``boolean``, ``choice``,
    ``image_size``, ``loras``. ``step`` is the natural slider step for numbers. ``short`` is the
    short name (an alias accepted everywhere, used in titles and columns), ``aliases`` are more
    accepted names, ``flag`` is the ``fluxnb run`` option that sets the field. ``parts`` are the
    specs of a structured kind's members (``image_size``: ``width``/``height``; ``loras``:
    ``scale``).
    """

    name: str
    kind: str
    doc: str
    label: str = ""
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    ctx: Mapping[str, Any] = field(default_factory=dict)
    short: str = ""
    aliases: tuple[str, ...] = ()
    flag: str = ""
    parts: Mapping[str, Field] = field(default_factory=dict)

    def range_text(self) -> str:
        """The allowed values in words, e.g. ``"1 to 50"`` or ``"one of jpeg, png"``."""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.minimum is not None and self.maximum is not None:
            return f"{fmt_number(self.minimum)} to {fmt_number(self.maximum)}"
        return self.kind


def fmt_number(x: float) -> str:
    """``28`` for integral values, the repr otherwise (``0.85``).

    >>> fmt_number(28.0), fmt_number(0.85)
    ('28', '0.85')
    """
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def error_item(loc: list[Any], msg: str, type_: str, value: Any, **ctx: Any) -> dict[str, Any]:
    """A fal-shaped error item for the body field at ``loc``."""
    item: dict[str, Any] = {"loc": ["body", *loc], "msg": msg, "type": type_}
    if value is not None:
        item["input"] = short_value(value)
    if ctx:
        item["ctx"] = ctx
    return item


def short_value(value: Any) -> Any:
    """A JSON-safe, short echo of a bad value (long strings such as data URIs are cut).

    >>> short_value("x" * 100)
    'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (100 chars)'
    """
    if isinstance(value, str) and len(value) > 80:
        return value[:60] + f"... ({len(value)} chars)"
    if isinstance(value, (int, float, bool, str)) or value is None:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + "..."


def where(loc: list[Any]) -> str:
    """``loras[0].scale`` for ``["loras", 0, "scale"]``."""
    text = str(loc[0])
    for part in loc[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def check_value(spec: Field, value: Any, loc: list[Any], errors: list[dict[str, Any]]) -> Any:
    """``value`` normalised for ``spec`` (floats that are integers become ints, ...), or
    :data:`BAD` after appending why to ``errors``."""
    kind = spec.kind
    if kind in ("string", "url"):
        return _check_string(spec, value, loc, errors)
    if kind == "boolean":
        if not isinstance(value, bool):
            errors.append(error_item(loc, f"{where(loc)} must be true or false, not "
                                          f"{short_value(value)!r}", "bool_type", value))
            return BAD
        return value
    if kind == "choice":
        if value not in spec.choices:
            errors.append(error_item(loc, f"{where(loc)}={short_value(value)!r} is not allowed: "
                                          f"{spec.range_text()} (default {spec.default})", "enum",
                                     value, expected=" or ".join(spec.choices)))
            return BAD
        return value
    if kind in ("integer", "number"):
        return _check_number(spec, value, loc, errors)
    if kind == "image_size":
        return _check_image_size(spec, value, loc, errors)
    if kind == "loras":
        return _check_loras(spec, value, loc, errors)
    raise AssertionError(f"unknown field kind {kind}")  # pragma: no cover - schema bug


def _check_string(spec: Field, value: Any, loc: list[Any], errors: list[dict[str, Any]]) -> Any:
    at = where(loc)
    if not isinstance(value, str):
        errors.append(error_item(loc, f"{at} must be a string, not {type(value).__name__} "
                                      f"{short_value(value)!r}", "string_type", value))
        return BAD
    if spec.required and spec.kind == "string" and not value.strip():
        errors.append(error_item(loc, f"{at} is empty: say what to paint in the masked area",
                                 "string_too_short", value))
        return BAD
    if spec.kind == "url" and not value.startswith(_URL_PREFIXES):
        errors.append(error_item(loc, f"{at}={short_value(value)!r} is not an http(s) URL or a data URI",
                                 "url_scheme", value))
        return BAD
    return value


def _check_number(spec: Field, value: Any, loc: list[Any], errors: list[dict[str, Any]]) -> Any:
    at = where(loc)
    given = value
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec.kind == "integer":
        if is_num and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(error_item(loc, f"{at} must be an integer, not {short_value(value)!r}",
                                     "int_type", value))
            return BAD
    else:
        if not is_num or not math.isfinite(value):
            errors.append(error_item(loc, f"{at} must be a finite number, not {short_value(value)!r}",
                                     "float_type", value))
            return BAD
        value = float(value)
    lo, hi = spec.minimum, spec.maximum
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        default = "" if spec.default is None else f" (default {fmt_number(spec.default)})"
        errors.append(error_item(loc, f"{at}={short_value(given)} is out of range: allowed "
                                      f"{spec.range_text()}{default}",
                                 "greater_than_equal" if lo is not None and value < lo
                                 else "less_than_equal", given, ge=lo, le=hi))
        return BAD
    return value


def _check_image_size(spec: Field, value: Any, loc: list[Any], errors: list[dict[str, Any]]) -> Any:
    """A preset name (``spec.choices``) or ``{width, height}``, each checked by ``spec.parts``."""
    at = where(loc)
    if isinstance(value, str):
        if value in spec.choices:
            return value
        errors.append(error_item(loc, f"{at}={short_value(value)!r} is not a size preset: one of "
                                      + ", ".join(spec.choices) + ", or {width, height}",
                                 "enum", value))
        return BAD
    if not isinstance(value, Mapping):
        errors.append(error_item(loc, f"{at} must be a preset name or {{width, height}}, not "
                                      f"{short_value(value)!r}", "image_size_type", value))
        return BAD
    out: dict[str, int] = {}
    ok = True
    for key, item in value.items():
        if key not in spec.parts:
            allowed = ", ".join(spec.parts)
            errors.append(error_item([*loc, key], f"unknown field {key!r} in {at} (allowed: {allowed})",
                                     "extra_forbidden", item))
            ok = False
            continue
        checked = _check_number(spec.parts[key], item, [*loc, key], errors)
        ok = ok and checked is not BAD
        if checked is not BAD:
            out[key] = checked
    return out if ok else BAD


def _check_loras(spec: Field, value: Any, loc: list[Any], errors: list[dict[str, Any]]) -> Any:
    """A list of ``{path, scale}``; ``scale`` checked by ``spec.parts["scale"]``."""
    if not isinstance(value, (list, tuple)):
        errors.append(error_item(loc, f"{where(loc)} must be a list of {{path, scale}}, not "
                                      f"{short_value(value)!r}", "list_type", value))
        return BAD
    out: list[dict[str, Any]] = []
    ok = True
    for i, item in enumerate(value):
        lora = _check_lora(spec.parts["scale"], item, [*loc, i], errors)
        ok = ok and lora is not BAD
        out.append(lora)
    return out if ok else BAD


def _check_lora(scale_spec: Field, item: Any, iloc: list[Any], errors: list[dict[str, Any]]) -> Any:
    if not isinstance(item, Mapping):
        errors.append(error_item(iloc, f"{where(iloc)} must be {{path, scale}}, not "
                                       f"{short_value(item)!r}", "dict_type", item))
        return BAD
    lora: dict[str, Any] = {}
    ok = True
    for key, sub in item.items():
        if key not in ("path", "scale"):
            errors.append(error_item([*iloc, key], f"unknown field {key!r} in {where(iloc)}"
                                                   " (allowed: path, scale)", "extra_forbidden", sub))
            ok = False
    path = item.get("path")
    if not isinstance(path, str) or not path.strip():
        errors.append(error_item([*iloc, "path"], f"{where(iloc)}.path must be a non-empty string "
                                                  "(a URL, a hub id or a file path)",
                                 "missing" if path is None else "string_type", path))
        ok = False
    else:
        lora["path"] = path
    checked = _check_number(scale_spec, item.get("scale", scale_spec.default), [*iloc, "scale"], errors)
    if checked is BAD:
        ok = False
    else:
        lora["scale"] = checked
    return lora if ok else BAD
