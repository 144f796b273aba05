"""Moved to :mod:`fluxnb.connect`; kept for compatibility."""

from __future__ import annotations

from .connect import connect, embedded_server

__all__ = ["connect", "embedded_server"]
