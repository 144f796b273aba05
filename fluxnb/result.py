"""Moved to :mod:`fluxnb.client.result`; kept for compatibility."""

from __future__ import annotations

from .client.result import InpaintResult, OutputImage

__all__ = ["InpaintResult", "OutputImage"]
