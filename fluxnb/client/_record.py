"""What a client remembers of a job's inputs for the parameters written into its images
(:mod:`fluxnb.params_meta`): the checked body's parameters, the sha256 of each input image as
sent (never the image, never a key) and the backend.

>>> record = job_record({"prompt": "p", "image_url": "data:image/png;base64,AAAA",
...                      "mask_url": "https://u:pw@h/m.png?token=t"}, {},
...                     base_url="http://127.0.0.1:8765", is_fal=False)
>>> record["backend"], record["inputs"]["mask_url"]
('127.0.0.1:8765', {'url': 'https://h/m.png'})
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from ..params_meta import build_metadata, input_digest

__all__ = ["backend_name", "job_record"]


def backend_name(base_url: str, *, is_fal: bool) -> str:
    """``fal.ai`` for fal's queue, else the base URL's host[:port] (no userinfo, no path).

    >>> backend_name("http://user:k@10.0.0.5:8765/x", is_fal=False)
    '10.0.0.5:8765'
    """
    if is_fal:
        return "fal.ai"
    parts = urllib.parse.urlsplit(str(base_url))
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return host + (f":{parts.port}" if parts.port is not None else "")


def job_record(body: Mapping[str, Any], pending: Mapping[str, tuple[bytes, str]], *,
               base_url: str, is_fal: bool) -> dict[str, Any]:
    """The record of one submit: ``body`` before uploads, ``pending`` the images to upload
    (hashed as the bytes that are uploaded)."""
    inputs = {name: input_digest(pending[name][0] if name in pending else body.get(name))
              for name in ("image_url", "mask_url")}
    return build_metadata(body, inputs=inputs, backend=backend_name(base_url, is_fal=is_fal))
