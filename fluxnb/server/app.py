"""The FastAPI app: fal's queue routes on top of :class:`~fluxnb.server.service.JobService`.

Routes only: request checks live in :mod:`~fluxnb.server.validate`; the counting, key check and
job lookup every queue route needs are FastAPI dependencies (``Submitted``, ``ToRead``, ...),
and a :class:`~fluxnb.server.validate.Rejected` raised by any of them becomes fal's answer. The
routes read the service and config from ``app.state``, so one module-level router serves every
app. Routes (``{app}`` is ``owner/app``, or ``workflows/owner/app``):

- ``POST /{app}/{path}`` submit; ``GET /{app}/requests/{id}/status[/stream]``;
  ``GET /{app}/requests/{id}`` result; ``PUT /{app}/requests/{id}/cancel``
- ``POST /_fluxnb/run/{app}/{path}``: fal's synchronous API (answers with the output itself)
- ``GET /_fluxnb/info``, ``GET /_fluxnb/stats``, ``GET /_fluxnb/files/{token}/{name}``,
  ``GET /_fluxnb/docs`` and ``/_fluxnb/openapi.json``

Who asks is a :class:`~fluxnb.server.auth.Person` (``Who``): with a roster a student sees only
their own jobs and files (another's answer 404); info, stats and the docs need a teacher
(``Teacher``) whenever the server has a key or a roster.

>>> from fluxnb.server import ServerConfig, create_app
>>> app = create_app(ServerConfig(engine="null"))
>>> app.state.service.engine.name
'null'
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .._version import __version__
from ..protocol import COMPLETED, IN_QUEUE
from .auth import Auth, Person
from .config import ServerConfig
from .dashboard import dashboard_router, session_authorization
from .guard import LaptopGuard
from .headers import EngineHeader
from .moderation import Blocklist, moderation_error
from .quota import QuotaExceeded
from .service import JobRecord, JobService
from .store import FILES_PREFIX, absolute_urls
from .validate import _ROSTER_KEY_HINT, Rejected, Submission, check_key, normal_app_id, parse_submit

__all__ = ["RUN_PREFIX", "create_app"]

logger = logging.getLogger("fluxnb.server")

_REQUEST_ROUTE = re.compile(r"^/(?P<app>.+?)/requests/(?P<id>[^/]+)(?P<tail>/status(?:/stream)?|/cancel)?/?$")
_HOST_OK = re.compile(r"^[A-Za-z0-9._\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_TRUE = {"1", "true", "yes", "on"}
#: fal's synchronous API lives here (fal.run has no queue): ``POST /_fluxnb/run/{app id}``.
RUN_PREFIX = "/_fluxnb/run/"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_KINDS = {"": "result", "/status": "status", "/status/stream": "stream", "/cancel": "cancel"}


def _detail(status: int, detail: Any) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


async def _rejected(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Rejected)
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers or None)


def create_app(config: ServerConfig, service: JobService | None = None) -> FastAPI:
    """Build the app; its :class:`JobService` (``app.state.service``) starts with the app's
    lifespan and stops (deleting result files) when the app shuts down.

    >>> app = create_app(ServerConfig(engine="preview"))
    """
    svc = service if service is not None else JobService(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(svc.start)
        try:
            yield
        finally:
            await run_in_threadpool(svc.stop)

    app = FastAPI(title="fluxnb local fal-compatible queue", version=__version__,
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = svc
    app.state.auth = Auth(key=config.key, roster_path=config.roster)
    app.state.config = config
    app.state.allowed_apps = {normal_app_id(a) for a in config.app_ids}
    svc.quota.people = lambda: app.state.auth.people  # quotas: the roster as it is now
    # moderation: the --blocklist, loaded once here (SIGHUP reloads it: host._reload_on_sighup)
    app.state.blocklist = Blocklist.load(config.blocklist) if config.blocklist else None
    app.add_middleware(EngineHeader, engine=svc.engine.name)
    app.add_middleware(LaptopGuard, config=config)  # laptop server: own Host, JSON only
    app.add_exception_handler(Rejected, _rejected)
    app.include_router(dashboard_router(_person))  # before _routes: its catch-alls match all
    app.include_router(_routes)
    return app


# -- dependencies: what a route needs from its app, or a Rejected ------------------------------


def _service(request: Request) -> JobService:
    return request.app.state.service  # type: ignore[no-any-return]


def _config(request: Request) -> ServerConfig:
    return request.app.state.config  # type: ignore[no-any-return]


def _person(request: Request) -> Person:
    """Who the request's ``Authorization: Key <token>`` names, or a 401 saying how to pass one."""
    auth: Auth = request.app.state.auth
    header = request.headers.get("authorization", "")
    if not header.strip():  # fluxnb's own pages and files also take the login cookie
        header = session_authorization(request)
    if not auth.has_roster:
        check_key(_config(request).key, header)
    person = auth.identify(header)
    if person is None:
        if not header.strip():
            raise Rejected.detail(401, "This fluxnb server needs your personal token and the "
                                       "request sent none (header 'Authorization: Key <token>'). "
                                       f"{_ROSTER_KEY_HINT}")
        raise Rejected.detail(401, "No user found for Key ID and Secret: the token sent is not "
                                   f"on this fluxnb server's roster. {_ROSTER_KEY_HINT}")
    return person


async def _who(request: Request) -> Person:
    return _person(request)


async def _teacher(request: Request) -> Person:
    person = _person(request)
    if not person.is_teacher:
        raise Rejected.detail(403, "Only a teacher's token may open this page")
    return person


async def _submission(request: Request, full_path: str, kind: str) -> tuple[Submission, Person]:
    """A checked submit and its sender, counted as ``kind``; every refusal is also counted as
    rejected."""
    svc = _service(request)
    svc.count(kind)
    try:
        person = _person(request)
        sub = await parse_submit(request, full_path, _config(request), svc.limits,
                                 request.app.state.allowed_apps)
        _moderate(request, svc, sub)
        return sub, person
    except Rejected:
        svc.count_rejected()
        raise


def _moderate(request: Request, svc: JobService, sub: Submission) -> None:
    """A 422 naming ``prompt`` (counted as moderated) when the prompt holds a blocklisted word."""
    blocklist: Blocklist | None = request.app.state.blocklist
    if blocklist is not None and blocklist.matches(str(sub.params.get("prompt", ""))):
        svc.count_moderated()
        raise Rejected.detail(422, [moderation_error()])


async def _queued(request: Request, full_path: str) -> tuple[Submission, Person]:
    return await _submission(request, full_path, "submit")


async def _run_now(request: Request, full_path: str) -> tuple[Submission, Person]:
    return await _submission(request, full_path, "run")


def _job(request: Request, full_path: str, *, cancel: bool) -> tuple[JobRecord, str]:
    """``(job, kind)`` a request route names, counted as its kind (result, status, stream or
    cancel) and checked against the key; a 404 for other paths, unknown ids, another app's or
    another person's."""
    match = _REQUEST_ROUTE.match("/" + full_path)
    kind = _KINDS[match.group("tail") or ""] if match else ""
    if match is None or (kind == "cancel") != cancel:
        raise Rejected.detail(404, "Not Found")
    svc = _service(request)
    svc.count(kind)
    person = _person(request)
    job = svc.get(match.group("id"))
    if job is None or normal_app_id(match.group("app")) != job.app or not person.sees(job.owner):
        raise Rejected(404, {"status": "NOT_FOUND"}) if cancel else \
            Rejected.detail(404, "Request not found")
    return job, kind


# async, so FastAPI runs them on the event loop rather than in its thread pool
async def _to_read(request: Request, full_path: str) -> tuple[JobRecord, str]:
    return _job(request, full_path, cancel=False)


async def _to_cancel(request: Request, full_path: str) -> tuple[JobRecord, str]:
    return _job(request, full_path, cancel=True)


async def _the_service(request: Request) -> JobService:
    return _service(request)


async def _the_config(request: Request) -> ServerConfig:
    return _config(request)


Service = Annotated[JobService, Depends(_the_service)]
Config = Annotated[ServerConfig, Depends(_the_config)]
Who = Annotated[Person, Depends(_who)]
Teacher = Annotated[Person, Depends(_teacher)]
Submitted = Annotated[tuple[Submission, Person], Depends(_queued)]
RunNow = Annotated[tuple[Submission, Person], Depends(_run_now)]
ToRead = Annotated[tuple[JobRecord, str], Depends(_to_read)]
ToCancel = Annotated[tuple[JobRecord, str], Depends(_to_cancel)]


# -- what the routes answer with ---------------------------------------------------------------


def _base_url(request: Request) -> str:
    host = request.headers.get("host", "")
    if not _HOST_OK.match(host):
        config = _config(request)
        server = request.scope.get("server") or (config.host, config.port)
        h = str(server[0])
        host = f"[{h}]:{server[1]}" if ":" in h else f"{h}:{server[1]}"
    return f"{request.url.scheme}://{host}"


def _urls(request: Request, job: JobRecord) -> dict[str, str]:
    response_url = f"{_base_url(request)}/{job.app}/requests/{job.id}"
    return {"request_id": job.id, "response_url": response_url,
            "status_url": f"{response_url}/status", "cancel_url": f"{response_url}/cancel"}


def _status_body(request: Request, job: JobRecord, with_logs: bool) -> dict[str, Any]:
    body = _service(request).snapshot(job, with_logs)
    body.update(_urls(request, job))
    return body


def _enqueue(svc: JobService, submitted: tuple[Submission, Person]) -> JobRecord:
    """Queue a checked submit; a job over a quota is a 429 (``Retry-After`` where waiting
    helps), counted as rejected."""
    sub, person = submitted
    try:
        return svc.submit(sub.app, sub.params, image=sub.image_data, mask=sub.mask_data,
                          priority=sub.priority, start_timeout=sub.start_timeout,
                          ignored=sub.ignored, owner=person.name, person=person)
    except QuotaExceeded as exc:
        svc.count_rejected()
        raise Rejected(exc.status, {"detail": exc.detail}, exc.headers) from None


def _result(request: Request, job: JobRecord) -> Response:
    headers = {"x-fal-request-id": job.id}
    if job.state != COMPLETED:
        return JSONResponse({"detail": "Request is still in progress"}, status_code=400,
                            headers=headers)
    if job.error is not None:
        headers.update(job.error_headers)
        headers["X-Fal-Error-Type"] = job.error_type or "internal_error"
        return JSONResponse(job.error_body or {"detail": job.error},
                            status_code=job.error_status or 500, headers=headers)
    return JSONResponse(absolute_urls(job.result or {}, _base_url(request)), headers=headers)


async def _stream(request: Request, job: JobRecord, with_logs: bool) -> AsyncIterator[str]:
    svc, keepalive = _service(request), _config(request).keepalive_interval
    seen = -1
    last = ""
    with svc.watch(job, logs=with_logs) as changed:
        while True:
            changed.clear()
            version = job.version
            if version != seen:
                seen = version
                body = _status_body(request, job, with_logs)
                text = json.dumps(body)
                if text != last:  # e.g. a new log line while logs are off: nothing to say
                    last = text
                    yield f"data: {text}\n\n"
                if body["status"] == COMPLETED:
                    return
                continue
            try:
                await asyncio.wait_for(changed.wait(), timeout=keepalive)
            except TimeoutError:
                yield ": keep-alive\n\n"


# -- the routes, in matching order: fluxnb's own first, then fal's catch-all queue routes --------

_routes = APIRouter()


@_routes.get("/_fluxnb/info")
async def info(request: Request, svc: Service, config: Config, _: Teacher) -> dict[str, Any]:
    return {"server": "fluxnb", "version": __version__, "engine": svc.engine.info(),
            "workers": config.workers, "app_ids": list(config.app_ids),
            "auth": not request.app.state.auth.open}


@_routes.get("/_fluxnb/stats")
async def stats(svc: Service, _: Teacher) -> dict[str, Any]:
    return svc.stats


@_routes.get("/_fluxnb/openapi.json", include_in_schema=False)
async def openapi(request: Request, _: Teacher) -> dict[str, Any]:
    return request.app.openapi()  # type: ignore[no-any-return]


@_routes.get("/_fluxnb/docs", include_in_schema=False)
async def docs(request: Request, _: Teacher) -> Response:
    return get_swagger_ui_html(openapi_url="/_fluxnb/openapi.json", title=request.app.title)


def _file_owned(svc: JobService, person: Person, token: str, name: str) -> bool:
    """Whether ``/{token}/{name}`` is an output of a job ``person`` may see (file names start
    with their job's id, and the job's result must list that very URL)."""
    job = svc.get(name.rpartition("-")[0])
    if job is None or not person.sees(job.owner):
        return False
    url = f"{FILES_PREFIX}{token}/{name}"
    images = (job.result or {}).get("images")
    return isinstance(images, list) and any(isinstance(i, dict) and i.get("url") == url
                                            for i in images)


@_routes.get(FILES_PREFIX + "{token}/{name}")
async def files(request: Request, svc: Service, token: str, name: str) -> Response:
    svc.count("files")
    # with a roster or a key, a file is its owner's (the key holder's): the token is checked
    person = None if request.app.state.auth.open else _person(request)
    found = svc.file(token, name)
    if found is None or not found[0].is_file() or (
            person is not None and not _file_owned(svc, person, token, name)):
        return _detail(404, "File not found")
    return FileResponse(found[0], media_type=found[1])


@_routes.post(RUN_PREFIX + "{full_path:path}")
async def run_sync(request: Request, svc: Service, sub: RunNow) -> Response:
    """fal's synchronous API (``fal.run``): the output itself, once the job is done.
    Point fal-client's ``run()`` here with ``FAL_RUN_HOST=host:port/_fluxnb/run``."""
    job = _enqueue(svc, sub)
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


@_routes.post("/{full_path:path}")
async def submit(request: Request, svc: Service, sub: Submitted) -> Response:
    job = _enqueue(svc, sub)
    if svc.journal is not None:  # durable before the client holds its id (off the event loop)
        await run_in_threadpool(svc.wait_saved)
    body: dict[str, Any] = {"status": IN_QUEUE, **_urls(request, job), "logs": None, "metrics": {},
                            "queue_position": svc.position(job) or 0, "gateway_request_id": job.id}
    return JSONResponse(body, headers={"x-fal-request-id": job.id})


@_routes.get("/{full_path:path}")
async def read(request: Request, requested: ToRead) -> Response:
    """A job's result, status or status stream (``?logs=1`` adds its log lines)."""
    job, kind = requested
    with_logs = request.query_params.get("logs", "").strip().lower() in _TRUE
    if kind == "status":
        code = 200 if job.state == COMPLETED else 202
        return JSONResponse(_status_body(request, job, with_logs), status_code=code,
                            headers={"x-fal-request-id": job.id})
    if kind == "stream":
        return StreamingResponse(_stream(request, job, with_logs), media_type="text/event-stream",
                                 headers={**_SSE_HEADERS, "x-fal-request-id": job.id})
    return _result(request, job)


@_routes.put("/{full_path:path}")
async def cancel(svc: Service, to_cancel: ToCancel) -> Response:
    job, _ = to_cancel
    outcome = svc.cancel(job.id)
    code = {"CANCELLATION_REQUESTED": 202, "ALREADY_COMPLETED": 400}.get(outcome, 404)
    return JSONResponse({"status": outcome}, status_code=code, headers={"x-fal-request-id": job.id})
