"""How sweep pictures write axis values: numbers short, content hashes cut, a LoRA by its file
name and "no LoRA" for none (a ``loras`` value of ``[]``, or ``lora_scale`` 0).

>>> axis_label("num_inference_steps", 8), axis_label("lora_scale", 0), axis_label("loras", "[]")
('steps=8', 'no LoRA', 'no LoRA')
>>> axis_label("loras", '[{"path":"/l/b.safetensors","scale":0.8}]')
'b.safetensors@0.8'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..schema import short_name

__all__ = ["axis_label", "fmt_value", "lora_text"]


def lora_text(value: Any) -> str:
    """A ``loras`` value (its JSON) by file name: ``a.safetensors``, ``b.safetensors@0.8``, "no LoRA"."""
    try:
        items = json.loads(value) if isinstance(value, str) else value
        names = [Path(str(i["path"])).name + ("" if float(i.get("scale", 1.0)) == 1 else
                                             f"@{float(i['scale']):g}") for i in items or []]
    except (TypeError, ValueError, KeyError, AttributeError):
        return str(value)
    return " + ".join(names) or "no LoRA"


def fmt_value(value: Any, name: str | None = None) -> str:
    """A value short enough for a label (``name`` says when it is a LoRA value)."""
    if name == "loras":
        value = lora_text(value)
    elif name == "lora_scale" and value == 0:
        return "no LoRA"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    if text.startswith("sha256:"):
        return "sha:" + text[7:15]
    return text if len(text) <= 28 else text[:25] + "..."


def axis_label(name: str, value: Any) -> str:
    """``steps=4``; a long one on two lines so a row label fits beside its picture; a LoRA by
    its file name, and "no LoRA" for none (or ``lora_scale`` 0)."""
    if name == "loras" or (name == "lora_scale" and value == 0):
        return fmt_value(value, name)
    text = f"{short_name(name)}={fmt_value(value)}"
    return text if len(text) <= 18 else f"{short_name(name)}=\n{fmt_value(value)}"
