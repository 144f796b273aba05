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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..datauri import decode_data_uri
from ..errors import ValidationError
from ..protocol import split_app_id
from ..schema import INPUT_FIELDS, resolve_image_size, validate_input
from .config import ServerConfig
from .inputs import ImageLimits, InputError, check_mask, decode_image_uri
from .loras import lora_errors

__all__ = ["Rejected", "Submission", "check_body", "check_key", "normal_app_id", "parse_submit",
           "queue_headers", "read_body"]

#: The end of every 401: fal's status and ``{"detail": ...}`` shape, but words a student can act on.
_KEY_HINT = ("Ask whoever runs this server for its key and pass it as fluxnb.connect(url, key=...), "
             "in the FLUXNB_KEY environment variable (with FLUXNB_BASE_URL), or with "
             "`fluxnb run --key KEY`; fal-client reads FAL_KEY.")
#: The same for a server with a roster: each person has a token of their own.
_ROSTER_KEY_HINT = ("Use your personal token (the one your teacher handed you) and pass it as "
                    "fluxnb.connect(url, key=...), in the FLUXNB_KEY environment variable (with "
                    "FLUXNB_BASE_URL), or with `fluxnb run --key TOKEN`; fal-client reads FAL_KEY.")


class Rejected(Exception):
    """A refused request: the HTTP ``status`` and fal's JSON ``body`` to answer with, and extra
    response ``headers`` (a 429's ``Retry-After``)."""

    def __init__(self, status: int, body: dict[str, Any],
                 headers: Mapping[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
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
    #: the data-URI inputs' encoded bytes (checked at submit; the worker decodes them); None for
    #: http(s) inputs, which the worker downloads
    image_data: bytes | None
    mask_data: bytes | None
    ignored: list[str]
    priority: str
    start_timeout: float | None


#: At most this many error items in a 422; one more item says how many were left out.
MAX_ERRORS = 20
#: A submit body may hold at most this many JSON objects (a real one has a handful).
MAX_OBJECTS = 10_000
#: Values (list items, object keys and leaves) checked per field before it counts as too large.
MAX_FIELD_VALUES = 2_000
#: ``X-Fal-Request-Timeout`` must lie in ``(0, MAX_REQUEST_TIMEOUT]`` seconds (one day).
MAX_REQUEST_TIMEOUT = 86_400.0
_MAX_IGNORED = 20  # unknown field names kept for the job's log line
_MAX_DEPTH = 16  # nesting levels of a field's value (loras[0].scale is 3)
_SURROGATE = re.compile("[\ud800-\udfff]")


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
        if not math.isfinite(timeout) or not 0 < timeout <= MAX_REQUEST_TIMEOUT:
            raise _header_error("x-fal-request-timeout",
                                f"X-Fal-Request-Timeout must be a number of seconds above 0 and at "
                                f"most {MAX_REQUEST_TIMEOUT:g} (one day), not {raw[:40]!r}")
    return priority, timeout


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length", "").strip()
    too_large = Rejected.detail(413, f"Request body is larger than {limit} bytes")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class _TooManyObjects(Exception):
    pass


def _counting_hook(limit: int) -> Any:
    """A ``json.loads`` ``object_pairs_hook`` that gives up after ``limit`` objects."""
    seen = [0]

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen[0] += 1
        if seen[0] > limit:
            raise _TooManyObjects
        return dict(pairs)

    return hook


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        if raw.count(b"{") > MAX_OBJECTS:  # braces in strings count too: check for real
            data = json.loads(raw, object_pairs_hook=_counting_hook(MAX_OBJECTS))
        else:
            data = json.loads(raw) if raw.strip() else None
    except _TooManyObjects:
        raise _body_error(f"the body holds more than {MAX_OBJECTS} JSON objects; a submit needs "
                          "a handful (see the input fields)", "too_long") from None
    except (ValueError, RecursionError) as exc:
        raise _body_error(f"the body is not valid JSON: {ascii(str(exc))[1:-1][:200]}") from None
    if not isinstance(data, dict):
        raise _body_error(f"the body must be a JSON object, not {type(data).__name__}"
                          if data is not None else "the body is empty; expected a JSON object")
    return data


def check_body(raw: bytes, limits: ImageLimits, max_image_pixels: int
               ) -> tuple[dict[str, Any], bytes | None, bytes | None, list[str]]:
    """``(params, image bytes, mask bytes, ignored field names)`` of a submit body: data-URI
    images are decoded to check them, then only their encoded bytes are kept (a queued job holds
    its inputs compressed); None for http(s) inputs, which the worker downloads. Slow on big
    images, so the app runs it in a thread."""
    data = _parse_json(raw)
    errors = _screen(data)  # lone surrogates and oversized fields, which are left out below
    screened = {e["loc"][1] for e in errors if len(e["loc"]) > 1}
    try:
        params = validate_input({k: v for k, v in data.items() if k not in screened},
                                fill_defaults=True, allow_unknown=True)
    except ValidationError as exc:
        errors += [e for e in exc.errors if not (len(e["loc"]) > 1 and e["loc"][1] in screened)]
        raise Rejected.detail(422, capped_errors(errors)) from None
    except (RecursionError, ValueError, TypeError) as exc:
        raise _body_error(f"cannot validate the body: {type(exc).__name__}", "value_error") from None
    if errors:
        raise Rejected.detail(422, capped_errors(errors))
    unknown = [str(k)[:80] for k in data if k not in INPUT_FIELDS]
    ignored = sorted(unknown[:_MAX_IGNORED])
    if len(unknown) > _MAX_IGNORED:
        ignored.append(f"... ({len(unknown) - _MAX_IGNORED} more)")
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
        raise Rejected.detail(422, capped_errors(errors))
    del decoded, mask  # the pixels were for the checks only; the worker decodes the bytes again
    encoded = {f: decode_data_uri(params[f])[1] if params[f].startswith("data:") else None
               for f in ("image_url", "mask_url")}
    return params, encoded["image_url"], encoded["mask_url"], ignored


def capped_errors(errors: list[dict[str, Any]], limit: int = MAX_ERRORS) -> list[dict[str, Any]]:
    """The first ``limit`` error items, then one item saying how many were left out.

    >>> [e["msg"] for e in capped_errors([{"loc": ["body"], "msg": str(i)} for i in range(4)], 2)]
    ['0', '1', '2 more errors were left out (a 422 shows the first 2)']
    """
    if len(errors) <= limit:
        return errors
    more = len(errors) - limit
    return [*errors[:limit], {"loc": ["body"], "type": "too_many_errors",
                              "msg": f"{more} more errors were left out (a 422 shows the first {limit})",
                              "ctx": {"left_out": more, "shown": limit}}]


def _screen(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Errors for what must never reach the schema check or an answer: field names and text with
    lone UTF-16 surrogates (JSON allows ``"\\ud800"``; UTF-8 cannot encode it) and fields too
    large to check. At most one error per field; unknown fields' values are never used."""
    errors: list[dict[str, Any]] = []
    for key, value in data.items():
        where = _surrogate_at(key)
        if where is not None:
            errors.append({"loc": ["body"], "type": "string_unicode",
                           "msg": f"the field name {ascii(key)[:60]} holds a lone UTF-16 surrogate "
                                  f"at character {where}: send valid Unicode text"})
            continue
        if key not in INPUT_FIELDS:
            continue
        found = _walk(value, [key], [MAX_FIELD_VALUES])
        if found is not None:
            errors.append(found)
    return errors


def _surrogate_at(text: str) -> int | None:
    if text.isascii():
        return None
    match = _SURROGATE.search(text)
    return None if match is None else match.start()


def _walk(value: Any, loc: list[Any], budget: list[int]) -> dict[str, Any] | None:
    """The error for the first surrogate in ``value`` or for its size over ``budget``, else None."""
    budget[0] -= 1
    if budget[0] < 0 or len(loc) > _MAX_DEPTH:
        return {"loc": ["body", loc[0]], "type": "too_long",
                "msg": f"{loc[0]} is too large to check: more than {MAX_FIELD_VALUES} values "
                       f"(list items, keys and values, all counted) or nested over {_MAX_DEPTH} "
                       "deep", "ctx": {"max_values": MAX_FIELD_VALUES, "max_depth": _MAX_DEPTH}}
    if isinstance(value, str):
        where = _surrogate_at(value)
        if where is None:
            return None
        at = loc[0] + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
        return {"loc": ["body", *loc], "type": "string_unicode",
                "msg": f"{at} holds a lone UTF-16 surrogate at character {where} (such as "
                       "\\ud800 in JSON): send valid Unicode text"}
    if isinstance(value, dict):
        for k, v in value.items():
            found = _walk(k, [*loc, "(key)"], budget) or _walk(v, [*loc, k], budget)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _walk(v, [*loc, i], budget)
            if found is not None:
                return found
    return None


async def parse_submit(request: Request, full_path: str, config: ServerConfig,
                       limits: ImageLimits, allowed_apps: set[str]) -> Submission:
    """Every check of a submit, in fal's order: key, app id, headers, body size, body."""
    check_key(config.key, request.headers.get("authorization", ""))
    app = check_app(full_path, allowed_apps)
    priority, start_timeout = queue_headers(request.headers)
    raw = await read_body(request, config.max_body_bytes)
    params, image_data, mask_data, ignored = await run_in_threadpool(
        check_body, raw, limits, config.max_image_pixels)
    # -- LoRA paths (server/loras.py): a refused loras[i].path is a 422 before queueing --
    lora_refusals = await run_in_threadpool(lora_errors, params.get("loras"), config)
    if lora_refusals:
        raise Rejected.detail(422, capped_errors(lora_refusals))
    # -- end LoRA paths --
    return Submission(app, params, image_data, mask_data, ignored, priority, start_timeout)
