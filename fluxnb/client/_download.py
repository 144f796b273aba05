"""One-off downloads with a short-lived connection pool, for a result's images when the client's
own pool cannot serve them (it is closed, or belongs to another flavour).

Errors are fluxnb's: an error status is a QueueHTTPError, a network failure a TransportError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from ..errors import TransportError
from ._responses import error_for_response, strip_query

__all__ = ["download", "download_async", "get_once"]


def _content(response: httpx.Response) -> bytes:
    if response.status_code >= 400:
        raise error_for_response(response)
    return response.content


def _failed(url: str, exc: httpx.HTTPError) -> TransportError:
    return TransportError(f"GET {strip_query(url)} failed: {type(exc).__name__}: {exc}",
                          url=strip_query(url))


def get_once(url: str, *, transport: httpx.BaseTransport | None, http_kwargs: Mapping[str, Any],
             headers: Mapping[str, str], params: Mapping[str, str] | None = None) -> httpx.Response:
    """GET ``url`` (following redirects) with a pool made for this one request; the answer,
    whatever its status, read in full."""
    try:
        with httpx.Client(transport=transport, **http_kwargs) as http:
            return http.get(url, params=params, headers=dict(headers), follow_redirects=True)
    except httpx.HTTPError as exc:
        raise _failed(url, exc) from exc


def download(url: str, *, transport: httpx.BaseTransport | None, http_kwargs: Mapping[str, Any],
             headers: Mapping[str, str]) -> bytes:
    """The content behind ``url`` (see :func:`get_once`); an error status is a fluxnb error."""
    return _content(get_once(url, transport=transport, http_kwargs=http_kwargs, headers=headers))


async def download_async(url: str, *, transport: httpx.AsyncBaseTransport | None,
                         http_kwargs: Mapping[str, Any], headers: Mapping[str, str]) -> bytes:
    """Async twin of :func:`download`."""
    try:
        async with httpx.AsyncClient(transport=transport, **http_kwargs) as http:
            return _content(await http.get(url, headers=dict(headers), follow_redirects=True))
    except httpx.HTTPError as exc:
        raise _failed(url, exc) from exc
