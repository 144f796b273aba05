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
import sys
import types
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
    "compare",
    "connect",
    "demo_inputs",
    "feather_mask",
    "fit_mask",
    "grow_mask",
    "invert_mask",
    "journal",
    "load_image",
    "load_mask",
    "mask_box",
    "mask_coverage",
    "mask_ellipse",
    "mask_polygon",
    "mask_threshold",
    "read_params",
    "show_grid",
    "sweep",
    "to_data_uri",
    "union_mask",
]

# public name -> module that defines it (tests/test_public_api.py ties this table, __all__ and
# the TYPE_CHECKING imports below together)
_LAZY = {
    "AsyncJob": "client",
    "AsyncQueueClient": "client",
    "CostWarning": "errors",
    "FluxnbError": "errors",
    "InpaintPanel": "widgets",
    "InpaintResult": "client",
    "Job": "client",
    "JobCancelledError": "errors",
    "JobFailedError": "errors",
    "JobTimeoutError": "errors",
    "MaskMismatchError": "errors",
    "MaskPainter": "widgets",
    "QueueClient": "client",
    "QueueHTTPError": "errors",
    "Sweep": "sweeps",
    "TransportError": "errors",
    "ValidationError": "errors",
    "asweep": "sweeps",
    "before_mask_after": "pictures",
    "compare": "widgets.swipe",
    "connect": "connect",
    "demo_inputs": "demo",
    "feather_mask": "masks",
    "fit_mask": "masks",
    "grow_mask": "masks",
    "invert_mask": "masks",
    "journal": "history_journal",
    "load_image": "images",
    "load_mask": "images",
    "mask_box": "masks",
    "mask_coverage": "masks",
    "mask_ellipse": "masks",
    "mask_polygon": "masks",
    "mask_threshold": "masks",
    "read_params": "params_meta",
    "show_grid": "display",
    "sweep": "sweeps",
    "to_data_uri": "images",
    "union_mask": "masks",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .client import AsyncJob, AsyncQueueClient, InpaintResult, Job, QueueClient
    from .connect import connect
    from .demo import demo_inputs
    from .display import show_grid
    from .errors import (
        CostWarning,
        FluxnbError,
        JobCancelledError,
        JobFailedError,
        JobTimeoutError,
        MaskMismatchError,
        QueueHTTPError,
        TransportError,
        ValidationError,
    )
    from .history_journal import journal
    from .images import load_image, load_mask, to_data_uri
    from .masks import (
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
    from .params_meta import read_params
    from .pictures import before_mask_after
    from .sweeps import Sweep, asweep, sweep
    from .widgets import InpaintPanel, MaskPainter
    from .widgets.swipe import compare


class _Package(types.ModuleType):
    """``fluxnb.connect`` is the function ``connect()``: importing the submodule of the same name
    (``fluxnb/connect.py``) must not replace it, as the import system would by default."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "connect" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fluxnb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
