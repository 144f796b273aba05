"""Moved to :mod:`fluxnb.server.host`; kept for compatibility.

>>> from fluxnb.server.runner import BackgroundServer, serve
"""

from __future__ import annotations

import uvicorn  # old code patches ``fluxnb.server.runner.uvicorn.Server``

from .host import BackgroundServer, serve

__all__ = ["BackgroundServer", "serve", "uvicorn"]
