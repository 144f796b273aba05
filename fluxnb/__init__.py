"""fluxnb: FLUX + LoRA inpainting from notebooks, through fal.ai's queue API or a local server.

>>> import fluxnb
>>> client = fluxnb.connect()                      # fal.ai with FAL_KEY, else an embedded local server
>>> image, mask = fluxnb.demo_inputs()              # or paths, PIL images, arrays, URLs
>>> result = client.run(prompt="a red fox", image_url=image, mask_url=mask)
>>> result.pil_images()[0].size
(512, 600)
>>> client.close()                                 # or: with fluxnb.connect() as client: ...

Names are loaded on first use, so ``import fluxnb`` stays cheap (no server or OpenCV import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = [
    "AsyncJob",
    "AsyncQueueClient",
    "CostWarning",
    "FluxnbError",
    "InpaintPanel",
    "InpaintResult",
    "Job",
    "JobCancelledError",
    "JobFailedError",
    "JobTimeoutError",
    "MaskMismatchError",
    "MaskPainter",
    "QueueClient",
    "QueueHTTPError",
    "Sweep",
    "TransportError",
    "ValidationError",
    "__version__",
    "asweep",
    "before_mask_after",
    "connect",
    "demo_inputs",
    "feather_mask",
    "fit_mask",
    "grow_mask",
    "invert_mask",
    "load_image",
    "load_mask",
    "mask_box",
    "mask_coverage",
    "mask_ellipse",
    "mask_polygon",
    "mask_threshold",
    "show_grid",
    "sweep",
    "to_data_uri",
    "union_mask",
]

# public name -> module that defines it
_LAZY = {
    "AsyncJob": "client",
    "AsyncQueueClient": "client",
    "CostWarning": "errors",
    "FluxnbError": "errors",
    "InpaintPanel": "widgets",
    "InpaintResult": "result",
    "Job": "client",
    "JobCancelledError": "errors",
    "JobFailedError": "errors",
    "JobTimeoutError": "errors",
    "MaskMismatchError": "masks",
    "MaskPainter": "widgets",
    "QueueClient": "client",
    "QueueHTTPError": "errors",
    "Sweep": "sweeps",
    "TransportError": "errors",
    "ValidationError": "errors",
    "asweep": "sweeps",
    "before_mask_after": "figures",
    "connect": "backends",
    "demo_inputs": "demo",
    "feather_mask": "masks",
    "fit_mask": "masks",
    "grow_mask": "masks",
    "invert_mask": "masks",
    "load_image": "images",
    "load_mask": "images",
    "mask_box": "masks",
    "mask_coverage": "masks",
    "mask_ellipse": "masks",
    "mask_polygon": "masks",
    "mask_threshold": "masks",
    "show_grid": "display",
    "sweep": "sweeps",
    "to_data_uri": "images",
    "union_mask": "masks",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .backends import connect
    from .client import AsyncJob, AsyncQueueClient, Job, QueueClient
    from .demo import demo_inputs
    from .display import show_grid
    from .errors import (
        CostWarning,
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
    from .masks import (
        MaskMismatchError,
        feather_mask,
        fit_mask,
        grow_mask,
        invert_mask,
        mask_box,
        mask_coverage,
        mask_ellipse,
        mask_polygon,
        mask_threshold,
        union_mask,
    )
    from .result import InpaintResult
    from .sweeps import Sweep, asweep, sweep
    from .widgets import InpaintPanel, MaskPainter


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fluxnb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
