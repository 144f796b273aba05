"""Moved to :mod:`fluxnb.pictures` (pure PIL pictures of a job); kept for compatibility.

>>> from fluxnb.figures import before_mask_after
>>> from fluxnb import pictures
>>> before_mask_after is pictures.before_mask_after
True
"""

from __future__ import annotations

from .pictures import before_mask_after, mask_overlay

__all__ = ["before_mask_after", "mask_overlay"]
