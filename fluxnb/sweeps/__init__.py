"""Parameter sweeps over the inpainting endpoint: grids or random samples of any schema field,
checked and priced before anything is sent, run with bounded concurrency, logged to a run folder
after every job (resumable), cached by content, measured, and drawn as contact sheets.

>>> import fluxnb
>>> image, mask = fluxnb.demo_inputs()                                   # doctest: +SKIP
>>> s = fluxnb.sweep(fluxnb.connect(), {"prompt": "a gold pin", "image_url": image,
...                  "mask_url": mask}, "runs/demo", steps="4-16 [3]", strength=[0.5, 1.0])  # doctest: +SKIP
>>> s.frame; s.contact_sheet(x="steps", y="strength")                    # doctest: +SKIP
"""

from __future__ import annotations

from .axes import parse_values
from .cache import ResultCache
from .metrics import inpaint_metrics
from .options import SweepOptions
from .plan import Preflight, SweepTooLargeError, build_plan
from .result import Sweep
from .runner import asweep, sweep
from .sheets import Sheet

__all__ = [
    "Preflight",
    "ResultCache",
    "Sheet",
    "Sweep",
    "SweepOptions",
    "SweepTooLargeError",
    "asweep",
    "build_plan",
    "inpaint_metrics",
    "parse_values",
    "sweep",
]
