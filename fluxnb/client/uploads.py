"""Upload files to fal storage (the CDN the endpoint reads inputs from), sync and async.

The flow is fal-client 1.0.3's (protocol §12):

1. ``POST {rest_url}/storage/auth/token?storage_type=fal-cdn-v3`` with ``Authorization: Key …`` and
   body ``{}`` → ``{"token", "token_type", "base_url", "expires_at"}``; the token is cached until
   ``expires_at``.
2. ``POST {base_url or cdn_url}/files/upload`` with the raw bytes, ``Authorization: <token_type>
   <token>``, ``Content-Type`` and ``X-Fal-File-Name`` → ``{"access_url": ...}``.

The clients use this only when they talk to fal and an input image is larger than their
``upload_threshold``; everything else travels as a data URI. Requests go through the client's
``send`` (so they get its retries and transport) and errors map to the same error tree.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import QueueHTTPError
from ._responses import error_for_response, read_json
from .auth import Secret, auth_headers

__all__ = ["DEFAULT_CDN_URL", "DEFAULT_REST_URL", "AsyncFalStorage", "FalStorage", "StorageToken",
           "parse_access_url", "parse_token"]

DEFAULT_REST_URL = "https://rest.fal.ai"
DEFAULT_CDN_URL = "https://v3.fal.media"

#: Refresh a token this many seconds before fal says it expires.
_EXPIRY_MARGIN = 30.0
#: How long to keep a token whose answer had no usable ``expires_at``.
_DEFAULT_TTL = 300.0

Send = Callable[..., httpx.Response]
AsyncSend = Callable[..., Awaitable[httpx.Response]]


@dataclass(frozen=True)
class StorageToken:
    token: Secret
    token_type: str
    base_url: str
    expires_at: float  # epoch seconds

    def header(self) -> dict[str, str]:
        return {"Authorization": f"{self.token_type} {self.token.reveal()}"}


def _parse_expiry(value: Any, now: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            when = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return now + _DEFAULT_TTL
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.UTC)
        return when.timestamp()
    return now + _DEFAULT_TTL


def parse_token(body: Any, *, cdn_url: str, now: float) -> StorageToken:
    if not isinstance(body, Mapping) or not isinstance(body.get("token"), str):
        raise QueueHTTPError(200, "storage token answer has no 'token'")
    return StorageToken(
        token=Secret(body["token"]),
        token_type=str(body.get("token_type") or "Bearer"),
        base_url=str(body.get("base_url") or cdn_url).rstrip("/"),
        expires_at=_parse_expiry(body.get("expires_at"), now),
    )


def parse_access_url(body: Any) -> str:
    if not isinstance(body, Mapping) or not isinstance(body.get("access_url"), str):
        raise QueueHTTPError(200, f"upload answer has no 'access_url': {str(body)[:200]}")
    access_url: str = body["access_url"]  # checked to be a str just above
    return access_url


class _StorageBase:
    def __init__(
        self,
        *,
        key: Secret | None,
        rest_url: str = DEFAULT_REST_URL,
        cdn_url: str = DEFAULT_CDN_URL,
        clock: Callable[[], float] = time.time,
    ):
        self._key = key
        self.rest_url = rest_url.rstrip("/")
        self.cdn_url = cdn_url.rstrip("/")
        self._clock = clock
        self._token: StorageToken | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rest_url={self.rest_url!r}, cdn_url={self.cdn_url!r})"

    def _cached(self) -> StorageToken | None:
        token = self._token
        if token is not None and self._clock() < token.expires_at - _EXPIRY_MARGIN:
            return token
        return None

    def _token_request(self) -> dict[str, Any]:
        return {
            "url": f"{self.rest_url}/storage/auth/token",
            "params": {"storage_type": "fal-cdn-v3"},
            "json": {},
            "headers": auth_headers(self._key),
        }

    def _upload_request(self, token: StorageToken, data: bytes, content_type: str,
                        file_name: str) -> dict[str, Any]:
        return {
            "url": f"{token.base_url}/files/upload",
            "content": data,
            "headers": {**token.header(), "Content-Type": content_type,
                        "X-Fal-File-Name": file_name},
        }

    def _store_token(self, response: httpx.Response) -> StorageToken:
        if response.status_code >= 400:
            raise error_for_response(response)
        token = parse_token(read_json(response, "storage token"), cdn_url=self.cdn_url,
                            now=self._clock())
        self._token = token
        return token

    @staticmethod
    def _access_url(response: httpx.Response) -> str:
        if response.status_code >= 400:
            raise error_for_response(response)
        return parse_access_url(read_json(response, "upload"))


class FalStorage(_StorageBase):
    """Uploads through a sync ``send(method, url, **kwargs) -> httpx.Response``."""

    def __init__(self, send: Send, **kwargs: Any):
        super().__init__(**kwargs)
        self._send = send

    def token(self) -> StorageToken:
        cached = self._cached()
        if cached is not None:
            return cached
        request = self._token_request()
        return self._store_token(self._send("POST", request.pop("url"), **request))

    def upload(self, data: bytes, content_type: str, file_name: str = "upload.png") -> str:
        """Upload ``data``; return its public ``access_url``."""
        request = self._upload_request(self.token(), data, content_type, file_name)
        return self._access_url(self._send("POST", request.pop("url"), **request))


class AsyncFalStorage(_StorageBase):
    """Uploads through an async ``send(method, url, **kwargs) -> httpx.Response``."""

    def __init__(self, send: AsyncSend, **kwargs: Any):
        super().__init__(**kwargs)
        self._send = send

    async def token(self) -> StorageToken:
        cached = self._cached()
        if cached is not None:
            return cached
        request = self._token_request()
        return self._store_token(await self._send("POST", request.pop("url"), **request))

    async def upload(self, data: bytes, content_type: str, file_name: str = "upload.png") -> str:
        """Upload ``data``; return its public ``access_url``."""
        request = self._upload_request(await self.token(), data, content_type, file_name)
        return self._access_url(await self._send("POST", request.pop("url"), **request))
