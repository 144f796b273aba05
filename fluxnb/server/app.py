"""The FastAPI app: fal's queue routes on top of :class:`~fluxnb.server.jobs.JobService`.

Routes (``{app}`` is ``owner/app``, or ``workflows/owner/app``):

- ``POST /{app}/{path}`` submit; ``GET /{app}/requests/{id}/status[/stream]``;
  ``GET /{app}/requests/{id}`` result; ``PUT /{app}/requests/{id}/cancel``
- ``POST /_fluxnb/run/{app}/{path}``: fal's synchronous API (answers with the output itself)
- ``GET /_fluxnb/info``, ``GET /_fluxnb/stats``, ``GET /_fluxnb/files/{token}/{name}``

>>> from fluxnb.server import ServerConfig, create_app
>>> app = create_app(ServerConfig(engine="null"))
>>> app.state.service.engine.name
'null'
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .._version import __version__
from ..errors import ValidationError
from ..protocol import split_app_id
from ..schema import INPUT_FIELDS, resolve_image_size, validate_input
from .config import ServerConfig
from .inputs import InputError, check_mask, decode_image_uri
from .jobs import COMPLETED, FILES_PREFIX, Job, JobService

__all__ = ["create_app"]

logger = logging.getLogger("fluxnb.server")

_REQUEST_ROUTE = re.compile(r"^/(?P<app>.+?)/requests/(?P<id>[^/]+)(?P<tail>/status(?:/stream)?|/cancel)?/?$")
_HOST_OK = re.compile(r"^[A-Za-z0-9._\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_TRUE = {"1", "true", "yes", "on"}
#: fal's synchronous API lives here (fal.run has no queue): ``POST /_fluxnb/run/{app id}``.
RUN_PREFIX = "/_fluxnb/run/"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: The end of every 401: fal's status and ``{"detail": ...}`` shape, but words a student can act on.
_KEY_HINT = ("Ask whoever runs this server for its key and pass it as fluxnb.connect(url, key=...), "
             "in the FLUXNB_KEY environment variable (with FLUXNB_BASE_URL), or with "
             "`fluxnb run --key KEY`; fal-client reads FAL_KEY.")


class _BodyTooLarge(Exception):
    pass


def _detail(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _body_error(msg: str, type_: str = "json_invalid") -> JSONResponse:
    return _detail(422, [{"loc": ["body"], "msg": msg, "type": type_}])


def _header_error(name: str, msg: str) -> JSONResponse:
    return _detail(422, [{"loc": ["header", name], "msg": msg, "type": "value_error"}])


def create_app(config: ServerConfig, service: JobService | None = None) -> FastAPI:
    """Build the app; its :class:`JobService` (``app.state.service``) starts with the app's
    lifespan and stops (deleting result files) when the app shuts down.

    >>> app = create_app(ServerConfig(engine="preview"))
    """
    svc = service if service is not None else JobService(config)
    engine_name = svc.engine.name

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(svc.start)
        try:
            yield
        finally:
            await run_in_threadpool(svc.stop)

    app = FastAPI(title="fluxnb local fal-compatible queue", version=__version__,
                  lifespan=lifespan, docs_url="/_fluxnb/docs", redoc_url=None,
                  openapi_url="/_fluxnb/openapi.json")
    app.state.service = svc
    app.state.config = config
    app.add_middleware(_EngineHeader, engine=engine_name)
    allowed_apps = {_normal_app_id(a) for a in config.app_ids}

    def base_url(request: Request) -> str:
        host = request.headers.get("host", "")
        if not _HOST_OK.match(host):
            server = request.scope.get("server") or (config.host, config.port)
            h = str(server[0])
            host = f"[{h}]:{server[1]}" if ":" in h else f"{h}:{server[1]}"
        return f"{request.url.scheme}://{host}"

    def auth_error(request: Request) -> JSONResponse | None:
        if config.key is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if not header:
            return _detail(401, "This fluxnb server needs a key and the request sent none "
                                f"(header 'Authorization: Key <key>'). {_KEY_HINT}")
        if scheme.lower() != "key" or not hmac.compare_digest(
                given.strip().encode("utf-8", "replace"), config.key.encode("utf-8")):
            return _detail(401, "No user found for Key ID and Secret: the key sent is not this "
                                f"fluxnb server's. {_KEY_HINT}")
        return None

    def urls(request: Request, job: Job) -> dict[str, str]:
        response_url = f"{base_url(request)}/{job.app}/requests/{job.id}"
        return {"request_id": job.id, "response_url": response_url,
                "status_url": f"{response_url}/status", "cancel_url": f"{response_url}/cancel"}

    def status_body(request: Request, job: Job, with_logs: bool) -> dict[str, Any]:
        body = svc.snapshot(job, with_logs)
        body.update(urls(request, job))
        return body

    # -- fluxnb's own routes ---------------------------------------------------------------

    @app.get("/_fluxnb/info")
    async def info() -> dict[str, Any]:
        return {"server": "fluxnb", "version": __version__, "engine": svc.engine.info(),
                "workers": config.workers, "app_ids": list(config.app_ids),
                "auth": config.key is not None}

    @app.get("/_fluxnb/stats")
    async def stats() -> dict[str, Any]:
        return svc.stats

    @app.get(FILES_PREFIX + "{token}/{name}")
    async def files(token: str, name: str) -> Response:
        svc.count("files")
        found = svc.file(token, name)
        if found is None:
            return _detail(404, "File not found")
        path, content_type = found
        if not path.is_file():
            return _detail(404, "File not found")
        return FileResponse(path, media_type=content_type)

    # -- fal's queue routes ----------------------------------------------------------------

    async def accept(request: Request, full_path: str) -> Job | Response:
        """Check auth, app id, headers and body; queue the job (or say why not)."""
        denied = auth_error(request)
        if denied is not None:
            svc.count_rejected()
            return denied
        try:
            owner, name, _path = split_app_id(full_path)
        except ValueError:
            owner = name = ""
        app_id = _normal_app_id(full_path)
        if not owner or app_id not in allowed_apps:
            svc.count_rejected()
            return _detail(404, f"App {full_path.strip('/')!r} not found on this server "
                                f"(it serves {', '.join(sorted(allowed_apps))})")
        answer = _parse_headers(request)
        if isinstance(answer, Response):
            svc.count_rejected()
            return answer
        priority, start_timeout = answer
        try:
            raw = await _read_body(request, config.max_body_bytes)
        except _BodyTooLarge:
            svc.count_rejected()
            return _detail(413, f"Request body is larger than {config.max_body_bytes} bytes")
        checked = await run_in_threadpool(_check_body, raw, svc, config)
        if isinstance(checked, Response):
            svc.count_rejected()
            return checked
        params, image, mask, ignored = checked
        return svc.submit(f"{owner}/{name}", params, image=image, mask=mask, priority=priority,
                          start_timeout=start_timeout, ignored=ignored)

    @app.post(RUN_PREFIX + "{full_path:path}")
    async def run_sync(request: Request, full_path: str) -> Response:
        """fal's synchronous API (``fal.run``): the output itself, once the job is done.
        Point fal-client's ``run()`` here with ``FAL_RUN_HOST=host:port/_fluxnb/run``."""
        svc.count("run")
        job = await accept(request, full_path)
        if isinstance(job, Response):
            return job
        with svc.watch(job, logs=False) as changed:
            while job.state != COMPLETED:
                changed.clear()
                if job.state == COMPLETED:
                    break
                try:
                    await asyncio.wait_for(changed.wait(), timeout=1.0)
                except TimeoutError:
                    if await request.is_disconnected():  # nobody is waiting any more
                        svc.cancel(job.id)
                        return _detail(499, "Client closed the request")
        return _result(request, job)

    @app.post("/{full_path:path}")
    async def submit(request: Request, full_path: str) -> Response:
        svc.count("submit")
        job = await accept(request, full_path)
        if isinstance(job, Response):
            return job
        body: dict[str, Any] = {"status": "IN_QUEUE", **urls(request, job), "logs": None, "metrics": {},
                "queue_position": svc.position(job) or 0, "gateway_request_id": job.id}
        return JSONResponse(body, headers={"x-fal-request-id": job.id})

    def lookup(match: re.Match[str]) -> Job | None:
        """The job a matched request path names, or None (unknown id, or another app's)."""
        job = svc.get(match.group("id"))
        if job is None or _normal_app_id(match.group("app")) != job.app:
            return None
        return job

    @app.get("/{full_path:path}")
    async def get_route(request: Request, full_path: str) -> Response:
        match = _REQUEST_ROUTE.match("/" + full_path)
        tail = (match.group("tail") or "") if match else ""
        if match is None or tail == "/cancel":
            return _detail(404, "Not Found")
        kind = {"": "result", "/status": "status", "/status/stream": "stream"}[tail]
        svc.count(kind)
        denied = auth_error(request)
        if denied is not None:
            return denied
        job = lookup(match)
        if job is None:
            return _detail(404, "Request not found")
        with_logs = request.query_params.get("logs", "").strip().lower() in _TRUE
        if kind == "status":
            code = 200 if job.state == COMPLETED else 202
            return JSONResponse(status_body(request, job, with_logs), status_code=code,
                                headers={"x-fal-request-id": job.id})
        if kind == "stream":
            return StreamingResponse(_stream(request, job, with_logs),
                                     media_type="text/event-stream",
                                     headers={**_SSE_HEADERS, "x-fal-request-id": job.id})
        return _result(request, job)

    @app.put("/{full_path:path}")
    async def cancel(request: Request, full_path: str) -> Response:
        match = _REQUEST_ROUTE.match("/" + full_path)
        if match is None or match.group("tail") != "/cancel":
            return _detail(404, "Not Found")
        svc.count("cancel")
        denied = auth_error(request)
        if denied is not None:
            return denied
        job = lookup(match)
        if job is None:
            return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
        outcome = svc.cancel(job.id)
        code = {"CANCELLATION_REQUESTED": 202, "ALREADY_COMPLETED": 400}.get(outcome, 404)
        return JSONResponse({"status": outcome}, status_code=code,
                            headers={"x-fal-request-id": job.id})

    def _result(request: Request, job: Job) -> Response:
        headers = {"x-fal-request-id": job.id}
        if job.state != COMPLETED:
            return JSONResponse({"detail": "Request is still in progress"}, status_code=400,
                                headers=headers)
        if job.error is not None:
            headers.update(job.error_headers)
            headers["X-Fal-Error-Type"] = job.error_type or "internal_error"
            return JSONResponse(job.error_body or {"detail": job.error},
                                status_code=job.error_status or 500, headers=headers)
        return JSONResponse(_absolute(job.result or {}, base_url(request)), headers=headers)

    async def _stream(request: Request, job: Job, with_logs: bool) -> AsyncIterator[str]:
        seen = -1
        last = ""
        with svc.watch(job, logs=with_logs) as changed:
            while True:
                changed.clear()
                version = job.version
                if version != seen:
                    seen = version
                    body = status_body(request, job, with_logs)
                    text = json.dumps(body)
                    if text != last:  # e.g. a new log line while logs are off: nothing to say
                        last = text
                        yield f"data: {text}\n\n"
                    if body["status"] == COMPLETED:
                        return
                    continue
                try:
                    await asyncio.wait_for(changed.wait(), timeout=config.keepalive_interval)
                except TimeoutError:
                    yield ": keep-alive\n\n"

    return app


def _normal_app_id(app_id: str) -> str:
    return "/".join(p for p in app_id.strip().split("/") if p)


def _parse_headers(request: Request) -> tuple[str, float | None] | Response:
    priority = request.headers.get("x-fal-queue-priority", "normal").strip().lower() or "normal"
    if priority not in ("normal", "low"):
        return _header_error("x-fal-queue-priority",
                             f"X-Fal-Queue-Priority must be 'normal' or 'low', not {priority[:40]!r}")
    raw = request.headers.get("x-fal-request-timeout")
    timeout: float | None = None
    if raw is not None and raw.strip():
        try:
            timeout = float(raw)
        except ValueError:
            timeout = math.nan
        if not math.isfinite(timeout) or timeout <= 0:
            return _header_error("x-fal-request-timeout",
                                 f"X-Fal-Request-Timeout must be a positive number of seconds, "
                                 f"not {raw[:40]!r}")
    return priority, timeout


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _check_body(raw: bytes, svc: JobService, config: ServerConfig
                ) -> tuple[dict[str, Any], Any, Any, list[str]] | Response:
    """Parse and validate a submit body; decode data-URI images. Runs in a worker thread."""
    try:
        data = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError) as exc:
        return _body_error(f"the body is not valid JSON: {str(exc)[:200]}")
    if not isinstance(data, dict):
        return _body_error(f"the body must be a JSON object, not {type(data).__name__}"
                           if data is not None else "the body is empty; expected a JSON object")
    try:
        params = validate_input(data, fill_defaults=True, allow_unknown=True)
    except ValidationError as exc:
        return _detail(422, exc.errors)
    except (RecursionError, ValueError, TypeError) as exc:
        return _body_error(f"cannot validate the body: {type(exc).__name__}", "value_error")
    ignored = sorted(str(k) for k in data if k not in INPUT_FIELDS)
    errors: list[dict[str, Any]] = []
    if params.get("image_size") is not None:
        w, h = resolve_image_size(params["image_size"], (1, 1))
        if w * h > config.max_image_pixels:
            errors.append({"loc": ["body", "image_size"], "type": "image_too_large",
                           "msg": f"image_size {w}x{h} = {w * h} pixels is over the limit of "
                                  f"{config.max_image_pixels}"})
    decoded: dict[str, Any] = {"image_url": None, "mask_url": None}
    for field, mode in (("image_url", "RGB"), ("mask_url", "L")):
        value = params[field]
        if value.startswith("data:"):
            try:
                decoded[field] = decode_image_uri(value, field, svc.limits, mode)
            except InputError as exc:
                errors.extend(exc.detail())
    if decoded["mask_url"] is not None:
        try:  # an empty mask, or one of another shape than the image, would be a no-op job
            check_mask(decoded["mask_url"], decoded["image_url"])
        except InputError as exc:
            errors.extend(exc.detail())
    if errors:
        return _detail(422, errors)
    return params, decoded["image_url"], decoded["mask_url"], ignored


def _absolute(result: dict[str, Any], base: str) -> dict[str, Any]:
    """The stored result with relative file URLs made absolute for this request's host."""
    images = result.get("images")
    if not isinstance(images, list):
        return result
    out = dict(result)
    out["images"] = [
        {**img, "url": base + img["url"]}
        if isinstance(img, dict) and str(img.get("url", "")).startswith("/") else img
        for img in images
    ]
    return out


_ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]],
                     Callable[[MutableMapping[str, Any]], Awaitable[None]]], Awaitable[None]]


class _EngineHeader:
    """Pure ASGI middleware adding ``X-Fluxnb-Engine`` to every response (streaming-safe)."""

    def __init__(self, app: _ASGIApp, engine: str):
        self.app = app
        self.header = (b"x-fluxnb-engine", engine.encode("latin-1", "replace"))

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, wrapped)
