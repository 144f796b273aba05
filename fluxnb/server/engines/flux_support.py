"""Pure helpers of the ``diffusers`` engine: sizes, devices, dtypes, step counts, LoRA caching
(which paths are allowed is :mod:`fluxnb.server.loras`).

Nothing here imports torch or diffusers on import (only :func:`import_diffusers`, when called),
so these run (and are tested) anywhere.

>>> padded_size(72, 56)
(80, 64)
>>> denoising_steps(28, 0.85)
24
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "MULTIPLE",
    "active_loras",
    "adapter_name",
    "default_lora_cache",
    "denoising_steps",
    "hub_offline",
    "import_diffusers",
    "lora_cache_file",
    "pad_pair",
    "padded_size",
    "resolve_device",
    "resolve_dtype",
]

#: FLUX works on 16-pixel cells (8x VAE, then 2x2 latent patches): sizes must be multiples of 16.
MULTIPLE = 16

_DTYPES = ("bfloat16", "float16", "float32")


def padded_size(width: int, height: int, multiple: int = MULTIPLE) -> tuple[int, int]:
    """The smallest size at least ``width`` x ``height`` whose sides are multiples of ``multiple``.

    >>> padded_size(64, 48), padded_size(1, 1), padded_size(1024, 1000)
    ((64, 48), (16, 16), (1024, 1008))
    """
    return (max(multiple, -(-width // multiple) * multiple),
            max(multiple, -(-height // multiple) * multiple))


def _pad_array(arr: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
    h, w = arr.shape[:2]
    extra = [(0, 0)] * (arr.ndim - 2)
    # reflect keeps texture continuous at the border; it needs pad < side, else repeat the edge
    widths = [(0, pad_h), (0, pad_w), *extra]
    if pad_h < h and pad_w < w:
        return np.pad(arr, widths, mode="reflect")
    return np.pad(arr, widths, mode="edge")


def pad_pair(image: Image.Image, mask: Image.Image,
             multiple: int = MULTIPLE) -> tuple[Image.Image, Image.Image, bool]:
    """Pad ``image`` (RGB) and ``mask`` (L) on the right and bottom up to multiples of ``multiple``
    by reflection (edge repeat for tiny images); returns ``(image, mask, padded)``. The caller
    crops the output back to the original size.

    >>> img, msk, padded = pad_pair(Image.new("RGB", (72, 56)), Image.new("L", (72, 56)))
    >>> img.size, msk.size, padded
    ((80, 64), (80, 64), True)
    """
    w, h = image.size
    pw, ph = padded_size(w, h, multiple)
    if (pw, ph) == (w, h):
        return image, mask, False
    rgb = _pad_array(np.asarray(image.convert("RGB")), ph - h, pw - w)
    msk = _pad_array(np.asarray(mask.convert("L")), ph - h, pw - w)
    return Image.fromarray(rgb, "RGB"), Image.fromarray(msk, "L"), True


def denoising_steps(steps: int, strength: float) -> int:
    """How many denoising steps an inpaint at ``strength`` runs out of ``steps`` (as diffusers'
    ``get_timesteps``: ``steps - int(steps - steps * strength)``, at least 1).

    >>> denoising_steps(28, 1.0), denoising_steps(28, 0.3), denoising_steps(50, 0.01)
    (28, 9, 1)
    """
    init = min(steps * strength, steps)
    return max(1, steps - int(max(steps - init, 0)))


def resolve_device(device: str, cuda_available: bool) -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is present, else ``cpu``; other names pass through.

    >>> resolve_device("auto", True), resolve_device("auto", False), resolve_device("cuda:1", True)
    ('cuda', 'cpu', 'cuda:1')
    """
    name = device.strip().lower()
    if name == "auto":
        return "cuda" if cuda_available else "cpu"
    if name in ("cpu", "mps") or name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, not {device!r}")


def resolve_dtype(dtype: str | None, device: str) -> str:
    """The weight dtype's name: ``bfloat16`` on a GPU and ``float32`` on the CPU by default.

    >>> resolve_dtype(None, "cuda"), resolve_dtype(None, "cpu"), resolve_dtype("fp16", "cuda")
    ('bfloat16', 'float32', 'float16')
    """
    if dtype is None or dtype == "auto":
        return "float32" if device == "cpu" else "bfloat16"
    name = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32",
            "float": "float32"}.get(dtype.lower(), dtype.lower())
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
    return name


def default_lora_cache() -> Path:
    """Where downloaded LoRAs are kept: ``$FLUXNB_LORA_CACHE``, else ``~/.cache/fluxnb/loras``."""
    env = os.environ.get("FLUXNB_LORA_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fluxnb" / "loras"


def lora_cache_file(cache_dir: Path, url: str) -> Path:
    """The cache path of a LoRA downloaded from ``url``: a folder keyed by the URL's hash, and the
    URL's own file name, always ending in ``.safetensors`` (only safetensors are loaded).

    >>> lora_cache_file(Path("/c"), "https://h/x/style.safetensors?dl=1").name
    'style.safetensors'
    """
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:24]
    name = Path(urllib.parse.urlparse(url).path).name or "lora.safetensors"
    if not name.lower().endswith(".safetensors"):
        name += ".safetensors"
    return cache_dir / digest / name


def active_loras(loras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The LoRAs a job really applies: an item at scale 0 is left out (not loaded, not set to
    weight 0), so a job whose LoRAs are all at 0 runs on the base weights, adapters disabled.

    >>> active_loras([{"path": "a.safetensors", "scale": 0.0}, {"path": "b.safetensors"}])
    [{'path': 'b.safetensors'}]
    """
    return [lora for lora in loras if float(lora.get("scale", 1.0)) != 0]


def adapter_name(key: str) -> str:
    """A stable peft adapter name for a resolved LoRA source.

    >>> adapter_name("/tmp/a.safetensors") == adapter_name("/tmp/a.safetensors")
    True
    """
    return "lora_" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (1, true, yes, on)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def import_diffusers() -> tuple[Any, Any]:
    """``(torch, FluxInpaintPipeline)``, imported now; a clear error without the extra."""
    try:
        import torch
        from diffusers import FluxInpaintPipeline
    except ImportError as exc:
        raise RuntimeError("the diffusers engine needs torch and diffusers: "
                           "pip install 'fluxnb[diffusers]' (install torch for your platform "
                           f"first): {exc}") from exc
    return torch, FluxInpaintPipeline
