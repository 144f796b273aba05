"""Moved to :mod:`fluxnb.client.uploads`; kept for compatibility."""

from __future__ import annotations

from .client.uploads import (
    DEFAULT_CDN_URL,
    DEFAULT_REST_URL,
    AsyncFalStorage,
    FalStorage,
    StorageToken,
    parse_access_url,
    parse_token,
)

__all__ = ["DEFAULT_CDN_URL", "DEFAULT_REST_URL", "AsyncFalStorage", "FalStorage", "StorageToken",
           "parse_access_url", "parse_token"]
