"""Moved to :mod:`fluxnb.client.sse`; kept for compatibility.

>>> SSEParser().feed("data: 1\\n\\n")[0].data
'1'
"""

from __future__ import annotations

from .client.sse import SSEEvent, SSEParser

__all__ = ["SSEEvent", "SSEParser"]
