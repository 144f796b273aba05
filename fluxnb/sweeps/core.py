"""Moved to :mod:`fluxnb.sweeps.result`; kept for compatibility."""

from __future__ import annotations

from .result import RESULT_COLUMNS, Sweep

__all__ = ["RESULT_COLUMNS", "Sweep"]
