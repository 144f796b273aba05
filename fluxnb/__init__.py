"""fluxnb: FLUX + LoRA inpainting from notebooks, through fal.ai's queue API or a local server.

>>> import fluxnb
>>> client = fluxnb.connect()                      # fal.ai with FAL_KEY, else an embedded local server
>>> result = client.run(prompt="a red fox", image_url="photo.jpg", mask_url="mask.png")
>>> result.pil_images()[0]

Names are loaded on first use, so ``import fluxnb`` stays cheap (no server or OpenCV import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = [
    "AsyncJob",
    "AsyncQueueClient",
    "FluxnbError",
    "InpaintResult",
    "Job",
    "JobCancelledError",
    "JobFailedError",
    "JobTimeoutError",
    "QueueClient",
    "QueueHTTPError",
    "TransportError",
    "ValidationError",
    "__version__",
    "before_mask_after",
    "connect",
    "demo_inputs",
    "load_image",
    "load_mask",
    "to_data_uri",
]

# public name -> module that defines it
_LAZY = {
    "AsyncJob": "client",
    "AsyncQueueClient": "client",
    "FluxnbError": "errors",
    "InpaintResult": "result",
    "Job": "client",
    "JobCancelledError": "errors",
    "JobFailedError": "errors",
    "JobTimeoutError": "errors",
    "QueueClient": "client",
    "QueueHTTPError": "errors",
    "TransportError": "errors",
    "ValidationError": "errors",
    "before_mask_after": "figures",
    "connect": "backends",
    "demo_inputs": "demo",
    "load_image": "images",
    "load_mask": "images",
    "to_data_uri": "images",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .backends import connect
    from .client import AsyncJob, AsyncQueueClient, Job, QueueClient
    from .demo import demo_inputs
    from .errors import (
        FluxnbError,
        JobCancelledError,
        JobFailedError,
        JobTimeoutError,
        QueueHTTPError,
        TransportError,
        ValidationError,
    )
    from .figures import before_mask_after
    from .images import load_image, load_mask, to_data_uri
    from .result import InpaintResult


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fluxnb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
