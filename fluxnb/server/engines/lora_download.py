"""Downloading a LoRA given by an http(s) URL into the engine's cache (one file per URL).

Kept apart from the engine so the server's fetch rules can take it over in one place.

>>> from fluxnb.server.engines.flux_support import lora_cache_file
>>> lora_cache_file(Path("/tmp/c"), "https://example.org/a.safetensors").suffix
'.safetensors'
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx

from .base import EngineInputError, JobContext
from .flux_support import lora_cache_file

__all__ = ["download_lora"]

_DOWNLOAD_LIMIT = 2 * 1024**3   # a LoRA larger than 2 GiB is not a LoRA
_DOWNLOAD_TIMEOUT = 60.0


def download_lora(url: str, cache: Path, field: str, ctx: JobContext) -> Path:
    """The LoRA at ``url`` as a file in ``cache``, downloaded once (streamed to a ``.part`` file,
    at most 2 GiB, cancellable between chunks); an :class:`EngineInputError` naming ``field``."""
    target = lora_cache_file(cache, url)
    if target.is_file():
        ctx.log(f"{field}: using the cached download {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + f".part-{os.getpid()}-{threading.get_ident()}")
    headers = {}
    token = os.environ.get("HF_TOKEN")
    if token and httpx.URL(url).host in ("huggingface.co", "hf.co"):
        headers["Authorization"] = f"Bearer {token}"
    ctx.log(f"{field}: downloading {url}")
    try:
        with httpx.stream("GET", url, headers=headers, follow_redirects=True,
                          timeout=_DOWNLOAD_TIMEOUT) as response:
            if response.status_code != 200:
                raise EngineInputError(field, f"{field}: GET {url} answered HTTP "
                                              f"{response.status_code}", "file_download_error")
            size = 0
            with open(part, "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    size += len(chunk)
                    if size > _DOWNLOAD_LIMIT:
                        raise EngineInputError(field, f"{field}: {url} is larger than "
                                                      "2 GiB", "file_download_error")
                    out.write(chunk)
                    ctx.check_cancelled()
        part.replace(target)
    except httpx.HTTPError as exc:
        raise EngineInputError(field, f"{field}: could not download {url}: {exc}",
                               "file_download_error") from None
    finally:
        part.unlink(missing_ok=True)
    return target
