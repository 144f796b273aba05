"""Downloading LoRAs (http(s) URLs and hub files) into a size-capped LRU cache, through the
server's fetch guard.

Every hop (the URL and each redirect) is resolved once and checked by the
:class:`~fluxnb.server.pinned.FetchPolicy` before connecting, and the connection is pinned to
the checked address. A download has a byte cap, a deadline for the whole transfer and a
per-operation timeout, checks the job's cancel between chunks, streams to a ``.part`` file and
lands in the cache only when complete and a valid safetensors file. The cache evicts the
least recently used files past its byte cap. A hub file's request carries the operator's
``HF_TOKEN`` only over https to the hub's own host (never over plain http, never to a redirect
target on another host, never for a user's URL).

>>> cache = LoraCache(Path("/tmp/fluxnb-doc-cache"), max_bytes=10**9)
>>> cache.path_for("https://example.org/a.safetensors").suffix
'.safetensors'
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..loras import is_safetensors
from ..pinned import FetchPolicy, FetchRefused, checked_addresses, send_pinned
from .base import EngineCancelled, EngineInputError, JobContext
from .flux_support import lora_cache_file

__all__ = ["DownloadLimits", "LoraCache", "download_lora", "hub_url"]

logger = logging.getLogger("fluxnb.server")

_MAX_REDIRECTS = 5
_HUB = "https://huggingface.co"


@dataclass(frozen=True)
class DownloadLimits:
    """``max_bytes`` per LoRA, ``timeout`` per network operation, ``deadline`` seconds for a
    whole download."""

    max_bytes: int = 2 * 1024**3   # a LoRA larger than 2 GiB is not a LoRA
    timeout: float = 20.0
    deadline: float = 300.0


class LoraCache:
    """Downloaded LoRAs, one file per URL, at most ``max_bytes`` in all; the least recently
    used go first."""

    def __init__(self, folder: Path, max_bytes: int = 8 * 1024**3):
        if max_bytes < 1:
            raise ValueError(f"the LoRA cache's max_bytes must be >= 1, not {max_bytes}")
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()

    def path_for(self, url: str) -> Path:
        """Where the download of ``url`` lives."""
        return lora_cache_file(self.folder, url)

    def get(self, url: str) -> Path | None:
        """The cached file of ``url`` (marked as just used), or None."""
        path = self.path_for(url)
        with self._lock:
            if not path.is_file():
                return None
            os.utime(path)
        return path

    def discard(self, path: Path) -> None:
        """Remove a cached file (one that failed to load)."""
        with self._lock:
            path.unlink(missing_ok=True)
            _rmdir_if_empty(path.parent)

    def files(self) -> list[Path]:
        """The cached files, least recently used first."""
        found = [p for p in self.folder.glob("*/*") if p.is_file() and ".part-" not in p.name]
        return sorted(found, key=lambda p: p.stat().st_mtime_ns)

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove the least recently used files (never ``keep``) until the cache fits its
        byte cap; the paths removed."""
        removed: list[Path] = []
        with self._lock:
            files = self.files()
            total = sum(p.stat().st_size for p in files)
            for path in files:
                if total <= self.max_bytes:
                    break
                if keep is not None and path == keep:
                    continue
                total -= path.stat().st_size
                path.unlink(missing_ok=True)
                _rmdir_if_empty(path.parent)
                removed.append(path)
        return removed


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def hub_url(repo: str, weight_name: str) -> str | None:
    """The https URL of a hub file (``HF_ENDPOINT`` or huggingface.co), or None when the
    endpoint is not https (hub files are then never fetched, so no token goes out in clear).

    >>> hub_url("owner/repo", "a.safetensors")
    'https://huggingface.co/owner/repo/resolve/main/a.safetensors'
    """
    endpoint = (os.environ.get("HF_ENDPOINT") or _HUB).rstrip("/")
    if httpx.URL(endpoint).scheme != "https":
        return None
    return f"{endpoint}/{repo}/resolve/main/{weight_name}"


def download_lora(url: str, cache: LoraCache, field: str, ctx: JobContext, policy: FetchPolicy,
                  limits: DownloadLimits = DownloadLimits(), *, hub: bool = False) -> Path:
    """The LoRA at ``url`` as a file in ``cache``, downloaded once. ``hub``: a hub file, sent
    with ``HF_TOKEN`` (https only, the first host only). Raises :class:`EngineCancelled` when
    the job is cancelled, else an :class:`EngineInputError` naming ``field`` with the policy's
    one message (the detail goes to the server log; the owner-only server shows it)."""
    cached = cache.get(url)
    if cached is not None:
        ctx.log(f"{field}: using the cached download")
        return cached
    target = cache.path_for(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"{target.name}.part-{os.getpid()}-{threading.get_ident()}")
    token = os.environ.get("HF_TOKEN") if hub else None
    ctx.log(f"{field}: downloading the LoRA")
    try:
        try:
            _fetch(httpx.URL(url), part, ctx, policy, limits, token)
            if not is_safetensors(part):
                raise _Failed("not a safetensors file")
            part.replace(target)
        except (_Failed, FetchRefused, httpx.HTTPError, OSError, ValueError) as exc:
            logger.info("%s: LoRA download failed: %s: %s", field, type(exc).__name__, exc)
            message = f"{field}: {policy.message}"
            if policy.detailed_errors:
                message += f" ({type(exc).__name__}: {exc})"[:300]
            raise EngineInputError(field, message, "file_download_error") from None
    finally:
        part.unlink(missing_ok=True)
    cache.evict(keep=target)
    return target


class _Failed(Exception):
    """A download that went wrong (the text is for the server log)."""


def _fetch(url: httpx.URL, part: Path, ctx: JobContext, policy: FetchPolicy,
           limits: DownloadLimits, token: str | None) -> None:
    start = time.monotonic()
    first_host = url.host
    with httpx.Client(timeout=limits.timeout, follow_redirects=False, trust_env=False) as client:
        for _hop in range(_MAX_REDIRECTS + 1):
            addresses = checked_addresses(url, policy)
            headers = {}
            if token and url.scheme == "https" and url.host == first_host:
                headers["Authorization"] = f"Bearer {token}"
            response = _send_pinned_with(client, url, addresses, headers)
            try:
                if response.is_redirect:
                    url = url.join(response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise _Failed(f"HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limits.max_bytes:
                    raise _Failed(f"{declared} bytes declared; the cap is {limits.max_bytes}")
                _stream_to(response, part, ctx, limits, start)
                return
            finally:
                response.close()
    raise _Failed(f"more than {_MAX_REDIRECTS} redirects")


def _send_pinned_with(client: httpx.Client, url: httpx.URL, addresses: list[Any],
                      headers: dict[str, str]) -> httpx.Response:
    if not headers:
        return send_pinned(client, url, addresses)
    client.headers.update(headers)
    try:
        return send_pinned(client, url, addresses)
    finally:
        for name in headers:
            del client.headers[name]


def _stream_to(response: httpx.Response, part: Path, ctx: JobContext, limits: DownloadLimits,
               start: float) -> None:
    size = 0
    with open(part, "wb") as out:
        for chunk in response.iter_bytes():   # as it arrives: a trickle still meets the checks
            if ctx.cancelled:
                raise EngineCancelled("cancelled while downloading a LoRA")
            if time.monotonic() - start > limits.deadline:
                raise _Failed(f"took longer than the deadline of {limits.deadline:g} s")
            size += len(chunk)
            if size > limits.max_bytes:
                raise _Failed(f"over the cap of {limits.max_bytes} bytes")
            out.write(chunk)
