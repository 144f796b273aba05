"""Checking a request before it becomes a job: the key, the app id, fal's queue headers and the
submit body (schema-validated, data-URI images decoded and checked), or the answer fal gives.

Every refusal is a :class:`Rejected` carrying fal's status code and JSON body; the app turns it
into the response.

>>> check_body(b'{"prompt": 1}', ImageLimits(), 10**6)
Traceback (most recent call last):
...
fluxnb.server.validate.Rejected: 422 ...
>>> queue_headers({"x-fal-queue-priority": "LOW", "x-fal-request-timeout": "2.5"})
('low', 2.5)
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..errors import ValidationError
from ..protocol import split_app_id
from ..schema import INPUT_FIELDS, resolve_image_size, validate_input
from .config import ServerConfig
from .inputs import ImageLimits, InputError, check_mask, decode_image_uri

__all__ = ["Rejected", "Submission", "check_body", "check_key", "normal_app_id", "parse_submit",
           "queue_headers", "read_body"]

#: The end of every 401: fal's status and ``{"detail": ...}`` shape, but words a student can act on.
_KEY_HINT = ("Ask whoever runs this server for its key and pass it as fluxnb.connect(url, key=...), "
             "in the FLUXNB_KEY environment variable (with FLUXNB_BASE_URL), or with "
             "`fluxnb run --key KEY`; fal-client reads FAL_KEY.")


class Rejected(Exception):
    """A refused request: the HTTP ``status`` and fal's JSON ``body`` to answer with."""

    def __init__(self, status: int, body: dict[str, Any]):
        self.status = status
        self.body = body
        super().__init__(f"{status} {json.dumps(body)[:300]}")

    @classmethod
    def detail(cls, status: int, detail: Any) -> Rejected:
        """fal's usual refusal, ``{"detail": detail}``."""
        return cls(status, {"detail": detail})


@dataclass(frozen=True)
class Submission:
    """A submit that passed every check: what :meth:`JobService.submit` takes."""

    app: str
    params: dict[str, Any]
    image: Image.Image | None
    mask: Image.Image | None
    ignored: list[str]
    priority: str
    start_timeout: float | None


def _body_error(msg: str, type_: str = "json_invalid") -> Rejected:
    return Rejected.detail(422, [{"loc": ["body"], "msg": msg, "type": type_}])


def _header_error(name: str, msg: str) -> Rejected:
    return Rejected.detail(422, [{"loc": ["header", name], "msg": msg, "type": "value_error"}])


def normal_app_id(app_id: str) -> str:
    """``owner/app[/path]`` without empty segments or surrounding blanks."""
    return "/".join(p for p in app_id.strip().split("/") if p)


def check_key(key: str | None, authorization: str) -> None:
    """Refuse (401) a request whose ``Authorization`` header is not ``Key <key>``; nothing to
    check when the server has no key. Compared in constant time."""
    if key is None:
        return
    scheme, _, given = authorization.partition(" ")
    if not authorization:
        raise Rejected.detail(401, "This fluxnb server needs a key and the request sent none "
                                   f"(header 'Authorization: Key <key>'). {_KEY_HINT}")
    if scheme.lower() != "key" or not hmac.compare_digest(
            given.strip().encode("utf-8", "replace"), key.encode("utf-8")):
        raise Rejected.detail(401, "No user found for Key ID and Secret: the key sent is not this "
                                   f"fluxnb server's. {_KEY_HINT}")


def check_app(full_path: str, allowed: set[str]) -> str:
    """``owner/name`` of a submit path whose app id this server serves, else a 404."""
    try:
        owner, name, _path = split_app_id(full_path)
    except ValueError:
        owner = name = ""
    if not owner or normal_app_id(full_path) not in allowed:
        raise Rejected.detail(404, f"App {full_path.strip('/')!r} not found on this server "
                                   f"(it serves {', '.join(sorted(allowed))})")
    return f"{owner}/{name}"


def queue_headers(headers: Mapping[str, str]) -> tuple[str, float | None]:
    """``(priority, start timeout)`` from ``X-Fal-Queue-Priority`` / ``X-Fal-Request-Timeout``."""
    priority = headers.get("x-fal-queue-priority", "normal").strip().lower() or "normal"
    if priority not in ("normal", "low"):
        raise _header_error("x-fal-queue-priority",
                            f"X-Fal-Queue-Priority must be 'normal' or 'low', not {priority[:40]!r}")
    raw = headers.get("x-fal-request-timeout")
    timeout: float | None = None
    if raw is not None and raw.strip():
        try:
            timeout = float(raw)
        except ValueError:
            timeout = math.nan
        if not math.isfinite(timeout) or timeout <= 0:
            raise _header_error("x-fal-request-timeout",
                                f"X-Fal-Request-Timeout must be a positive number of seconds, "
                                f"not {raw[:40]!r}")
    return priority, timeout


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length", "").strip()
    too_large = Rejected.detail(413, f"Request body is larger than {limit} bytes")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError) as exc:
        raise _body_error(f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise _body_error(f"the body must be a JSON object, not {type(data).__name__}"
                          if data is not None else "the body is empty; expected a JSON object")
    return data


def check_body(raw: bytes, limits: ImageLimits, max_image_pixels: int
               ) -> tuple[dict[str, Any], Image.Image | None, Image.Image | None, list[str]]:
    """``(params, image, mask, ignored field names)`` of a submit body, data-URI images decoded
    (None for http(s) inputs, which the worker downloads); slow on big images, so the app runs it
    in a thread."""
    data = _parse_json(raw)
    try:
        params = validate_input(data, fill_defaults=True, allow_unknown=True)
    except ValidationError as exc:
        raise Rejected.detail(422, exc.errors) from None
    except (RecursionError, ValueError, TypeError) as exc:
        raise _body_error(f"cannot validate the body: {type(exc).__name__}", "value_error") from None
    ignored = sorted(str(k) for k in data if k not in INPUT_FIELDS)
    errors: list[dict[str, Any]] = []
    if params.get("image_size") is not None:
        w, h = resolve_image_size(params["image_size"], (1, 1))
        if w * h > max_image_pixels:
            errors.append({"loc": ["body", "image_size"], "type": "image_too_large",
                           "msg": f"image_size {w}x{h} = {w * h} pixels is over the limit of "
                                  f"{max_image_pixels}"})
    decoded: dict[str, Image.Image | None] = {"image_url": None, "mask_url": None}
    for field, mode in (("image_url", "RGB"), ("mask_url", "L")):
        value = params[field]
        if value.startswith("data:"):
            try:
                decoded[field] = decode_image_uri(value, field, limits, mode)
            except InputError as exc:
                errors.extend(exc.detail())
    mask = decoded["mask_url"]
    if mask is not None:
        try:  # an empty mask, or one of another shape than the image, would be a no-op job
            check_mask(mask, decoded["image_url"])
        except InputError as exc:
            errors.extend(exc.detail())
    if errors:
        raise Rejected.detail(422, errors)
    return params, decoded["image_url"], mask, ignored


async def parse_submit(request: Request, full_path: str, config: ServerConfig,
                       limits: ImageLimits, allowed_apps: set[str]) -> Submission:
    """Every check of a submit, in fal's order: key, app id, headers, body size, body."""
    check_key(config.key, request.headers.get("authorization", ""))
    app = check_app(full_path, allowed_apps)
    priority, start_timeout = queue_headers(request.headers)
    raw = await read_body(request, config.max_body_bytes)
    params, image, mask, ignored = await run_in_threadpool(
        check_body, raw, limits, config.max_image_pixels)
    return Submission(app, params, image, mask, ignored, priority, start_timeout)
