"""Notebook widgets: :class:`InpaintPanel` (run jobs with sliders, Run and Cancel) and
:class:`MaskPainter` (paint a mask over the image). Both are also ``fluxnb.InpaintPanel`` and
``fluxnb.MaskPainter``.
"""

from __future__ import annotations

from .history import RunHistory, RunRecord
from .painter import MaskPainter, Stroke
from .panel import InpaintPanel

__all__ = ["InpaintPanel", "MaskPainter", "RunHistory", "RunRecord", "Stroke"]
