"""The teacher's dashboard, each person's gallery and the login form (issue 11, item 5).

Routes (``create_app`` includes :func:`dashboard_router`):

- ``GET /_fluxnb/dashboard`` (teacher): queue, running jobs, per-student usage against quota and
  budget, recently finished jobs, recent results and refusal counts, server-rendered; the page
  polls ``GET /_fluxnb/dashboard/state`` once a second for its sections (escaped HTML in JSON).
- ``POST /_fluxnb/dashboard/{cancel,pause,resume,reload}`` (teacher): JSON bodies ``{"id": ...}``
  / ``{"owner": ...}`` (no owner: the whole queue).
- ``GET /_fluxnb/gallery`` (+ ``/state``): the asker's own recent results (a teacher: everyone's).
- ``GET/POST /_fluxnb/login``, ``POST /_fluxnb/logout``; ``GET /_fluxnb/pages/{dashboard.js,style.css}``.

Who asks: ``Authorization: Key <token>`` as on every route, or the login cookie (``fluxnb_session``,
``HttpOnly; SameSite=Strict; Path=/_fluxnb``, ``Secure`` over TLS). The cookie holds a random
session id, never the token, and counts only for fluxnb's own pages and files: GETs under
``/_fluxnb/`` (not ``/_fluxnb/run/``) and the dashboard's action POSTs. The queue API never takes
it, so a page on another site cannot submit or cancel jobs with a student's login. An action also
needs the ``X-Fluxnb-CSRF`` header (a custom header no cross-site form can send); with the
cookie its value must be the session's own token, which the page carries in a ``<meta>``.

>>> from fluxnb.server.auth import ANYONE
>>> router = dashboard_router(lambda request: ANYONE)
>>> "/_fluxnb/dashboard" in {getattr(r, "path", "") for r in router.routes}
True
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ..protocol import COMPLETED, IN_PROGRESS, IN_QUEUE
from ..schema import INPUT_FIELDS
from . import pages
from .auth import Auth, Person, RosterError
from .record import JobRecord
from .sessions import COOKIE, SESSION_TTL, Sessions, session_authorization
from .store import FILES_PREFIX
from .validate import Rejected

__all__ = ["COOKIE", "CSRF_HEADER", "Sessions", "dashboard_router", "session_authorization"]

logger = logging.getLogger("fluxnb.server")

CSRF_HEADER = "X-Fluxnb-CSRF"
_MAX_BODY = 8192
_GALLERY, _FINISHED = 48, 20
_PAGES = {"/_fluxnb/dashboard", "/_fluxnb/gallery"}
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin"}  # no-referrer would make a form POST's Origin "null"
_OUTCOME = {"request_cancelled": "cancelled", "request_timeout": "timed_out"}


# -- what the pages show ------------------------------------------------------------------------


def _default(name: str) -> Any:
    return getattr(INPUT_FIELDS.get(name), "default", None)


def _size(value: Any) -> str:
    if isinstance(value, dict):
        return f"{value.get('width')}x{value.get('height')}"
    return "input size" if value is None else str(value)


def _row(job: JobRecord, now: float, position: int | None = None) -> dict[str, Any]:
    p = job.params
    since = job.started_at if job.state == IN_PROGRESS and job.started_at else job.submitted_at
    return {"id": job.id, "owner": job.owner, "prompt": p.get("prompt"),
            "size": _size(p.get("image_size")),
            "steps": p.get("num_inference_steps", _default("num_inference_steps")),
            "images": p.get("num_images", _default("num_images")),
            "seconds": round(max(0.0, now - since), 1), "position": position}


def _finished(job: JobRecord) -> dict[str, Any]:
    outcome = "done" if job.error is None else _OUTCOME.get(job.error_type or "", "failed")
    return {"id": job.id, "owner": job.owner, "prompt": job.params.get("prompt"),
            "outcome": outcome, "error": job.error}


def _gallery(jobs: list[JobRecord], limit: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for job in sorted((j for j in jobs if j.ok), key=lambda j: j.seq, reverse=True):
        images = [i for i in (job.result or {}).get("images") or []
                  if isinstance(i, dict) and str(i.get("url", "")).startswith(FILES_PREFIX)]
        if not images:
            continue
        first, p = images[0], job.params
        params = [f"{first.get('width')}x{first.get('height')}",
                  f"{p.get('num_inference_steps', _default('num_inference_steps'))} steps",
                  f"cfg {p.get('guidance_scale', _default('guidance_scale'))}",
                  f"seed {(job.result or {}).get('seed', p.get('seed'))}"]
        if len(images) > 1:
            params.append(f"+{len(images) - 1} more")
        out.append({"id": job.id, "owner": job.owner, "prompt": p.get("prompt"),
                    "url": first["url"], "params": " · ".join(params)})
        if len(out) >= limit:
            break
    return out


def _usage(request: Request) -> list[dict[str, Any]]:
    svc, auth = request.app.state.service, request.app.state.auth
    usage: dict[str, dict[str, Any]] = svc.usage()
    people = {p.name: p for p in auth.people if not p.is_teacher}
    teachers = {p.name for p in auth.people if p.is_teacher}
    rows = []
    for name in sorted(set(usage) | set(people)):
        person = people.get(name)
        counts = usage.get(name, {})
        if name in teachers and not any(counts.get(k) for k in ("queued", "running", "completed",
                                                                 "failed")):
            continue  # a teacher who has not submitted anything
        row = {"owner": name, "queued": 0, "running": 0, "completed": 0, "failed": 0,
               "megapixels": 0.0, "usd": 0.0, **usage.get(name, {})}
        if person is not None:
            row.setdefault("max_queued", person.max_queued if person.max_queued is not None
                           else request.app.state.config.queued_limit)
            row.setdefault("budget_mp", person.budget_mp if person.budget_mp is not None
                           else request.app.state.config.budget_mp)
            row.setdefault("budget_usd", person.budget_usd if person.budget_usd is not None
                           else request.app.state.config.budget_usd)
        rows.append(row)
    return rows


def _view(request: Request) -> dict[str, Any]:
    """Everything the dashboard shows, as plain values."""
    svc = request.app.state.service
    now, jobs = time.monotonic(), svc.jobs()
    queued = [(svc.position(j), j) for j in jobs if j.state == IN_QUEUE]
    queued = [(pos, j) for pos, j in queued if pos is not None]
    queued.sort(key=lambda pj: pj[0])
    done = sorted((j for j in jobs if j.state == COMPLETED), key=lambda j: j.seq, reverse=True)
    return {"queue": [_row(j, now, pos) for pos, j in queued],
            "running": [_row(j, now) for j in jobs if j.state == IN_PROGRESS],
            "usage": _usage(request), "finished": [_finished(j) for j in done[:_FINISHED]],
            "gallery": _gallery(jobs, _GALLERY // 2), "paused": svc.paused(), "stats": svc.stats}


# -- the routes --------------------------------------------------------------------------------


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=_PAGE_HEADERS)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _same_origin(request: Request) -> None:
    """A 403 for a request a browser marks as coming from another site."""
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if (origin is not None and origin != expected) or site not in (None, "same-origin", "none"):
        raise Rejected.detail(403, "Refused: this action came from another site's page "
                                   f"(Origin {origin!r}); use the dashboard itself")


def _check_csrf(request: Request, sessions: Sessions) -> None:
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        raise Rejected.detail(403, f"Dashboard actions need the {CSRF_HEADER} header the dashboard "
                                   "page sends; use its buttons (or send the header with your "
                                   "Authorization: Key <token>)")
    if request.headers.get("authorization", "").strip() or request.app.state.auth.open:
        return  # a cross-site form can send neither this header nor an Authorization header
    found = sessions.get(request.cookies.get(COOKIE))
    if found is None or not hmac.compare_digest(given.encode("utf-8", "replace"),
                                                found.csrf.encode()):
        raise Rejected.detail(403, f"The {CSRF_HEADER} header does not match your login session; "
                                   "reload the dashboard and try again")


async def _capped_body(request: Request) -> bytes:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_BODY:
            raise Rejected.detail(413, f"A dashboard or login form's body is at most {_MAX_BODY} bytes")
    return raw


async def _json_body(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise Rejected.detail(415, "Dashboard actions take a JSON body "
                                   "(Content-Type: application/json)")
    raw = await _capped_body(request)
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise Rejected.detail(422, "The action's body is not JSON (expected {\"id\": ...} or "
                                   "{\"owner\": ...})") from None
    if not isinstance(body, dict):
        raise Rejected.detail(422, "The action's body must be a JSON object")
    return body


def _name(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 200 or not _encodable(value):
        raise Rejected.detail(422, f"{key!r} must be a name of 1 to 200 characters (valid "
                                   f"Unicode), not {ascii(value):.60}")
    return value


def _encodable(text: str) -> bool:
    """False for text with a lone UTF-16 surrogate (it could never be sent back as JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _login_form(raw: bytes) -> dict[str, list[str]]:
    """The login form's fields; a 400 for a body of more than a few fields."""
    try:
        return parse_qs(raw.decode("utf-8", "replace"), max_num_fields=4)
    except ValueError:
        raise Rejected.detail(400, "The login form has at most 4 fields (token and next); "
                                   "use the login page's form") from None


def _login_ok(request: Request, token: str) -> Person | None:
    auth: Auth = request.app.state.auth
    if auth.has_roster:
        return auth.identify(f"Key {token}")
    key = request.app.state.config.key
    if key is None or hmac.compare_digest(token.encode("utf-8", "replace"), key.encode()):
        return auth.identify("")
    return None


def dashboard_router(person: Callable[[Request], Person]) -> APIRouter:
    """The dashboard's routes; ``person`` names who asks (the app's ``_person``: the header, or
    the login cookie) or raises a :class:`Rejected` 401."""
    router = APIRouter()

    def viewer(request: Request, *, teacher: bool, page: bool) -> Person | Response:
        try:
            who = person(request)
        except Rejected as exc:
            if page and exc.status == 401 and _wants_html(request):
                target = request.url.path if request.url.path in _PAGES else "/_fluxnb/dashboard"
                return RedirectResponse(f"/_fluxnb/login?next={quote(target)}", status_code=303)
            raise
        if teacher and not who.is_teacher:
            text = ("Only a teacher's token may open the dashboard; your own results are in "
                    "your gallery at /_fluxnb/gallery")
            if page and _wants_html(request):
                return _html(pages.message_page("Teachers only", text), 403)
            raise Rejected.detail(403, text)
        return who

    def csrf_of(request: Request) -> str:
        found = Sessions.of(request.app).get(request.cookies.get(COOKIE))
        return found.csrf if found is not None else ""

    @router.get("/_fluxnb/pages/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in pages.ASSETS:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        text, kind = pages.ASSETS[name]
        return Response(text, media_type=kind, headers={"X-Content-Type-Options": "nosniff"})

    @router.get("/_fluxnb/login", include_in_schema=False)
    async def login_form(next: str = "") -> Response:  # noqa: A002 - the query's name
        return _html(pages.login_page(next if next in _PAGES else ""))

    @router.post("/_fluxnb/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        _same_origin(request)
        raw = await _capped_body(request)
        form = _login_form(raw)
        token = (form.get("token") or [""])[0].strip()
        wanted = (form.get("next") or [""])[0]
        who = _login_ok(request, token) if token else None
        if who is None:
            return _html(pages.login_page(wanted if wanted in _PAGES else "",
                                          "That token is not on this server's roster: check it "
                                          "for a missing character, or ask your teacher"), 401)
        sid, _ = Sessions.of(request.app).new(token)
        target = wanted if wanted in _PAGES else (
            "/_fluxnb/dashboard" if who.is_teacher else "/_fluxnb/gallery")
        logger.info("%s logged in to the dashboard pages", who.name or "the key holder")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, sid, max_age=int(SESSION_TTL), path="/_fluxnb", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    @router.post("/_fluxnb/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        _same_origin(request)
        Sessions.of(request.app).drop(request.cookies.get(COOKIE))
        response = RedirectResponse("/_fluxnb/login", status_code=303)
        response.delete_cookie(COOKIE, path="/_fluxnb", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response

    @router.get("/_fluxnb/dashboard", include_in_schema=False)
    async def dashboard(request: Request) -> Response:
        who = viewer(request, teacher=True, page=True)
        if isinstance(who, Response):
            return who
        return _html(pages.dashboard_page(_view(request), csrf=csrf_of(request), who=who.name))

    @router.get("/_fluxnb/dashboard/state")
    async def dashboard_state(request: Request) -> Response:
        viewer(request, teacher=True, page=False)
        view = _view(request)
        return JSONResponse({"sections": pages.dashboard_sections(view), "updated": time.time(),
                             "queued": len(view["queue"]), "running": len(view["running"])},
                            headers={"Cache-Control": "no-store"})

    @router.post("/_fluxnb/dashboard/{action}")
    async def act(request: Request, action: str) -> Response:
        who = viewer(request, teacher=True, page=False)
        assert isinstance(who, Person)
        _same_origin(request)
        _check_csrf(request, Sessions.of(request.app))
        body = await _json_body(request)
        svc, actor = request.app.state.service, who.name or "the teacher"
        if action == "cancel":
            job_id = _name(body, "id") or ""
            outcome = svc.cancel(job_id)
            if outcome == "NOT_FOUND":
                raise Rejected.detail(404, f"No job {job_id!r} (finished long ago, or never there)")
            logger.info("%s cancelled job %s from the dashboard", actor, job_id)
            return JSONResponse({"status": outcome, "message": f"Job {job_id[:8]}: {outcome}"})
        if action in ("pause", "resume"):
            owner = _name(body, "owner")
            getattr(svc, action)(owner)
            what = owner if owner is not None else "the queue"
            logger.info("%s: %s %s from the dashboard", actor, action, what)
            return JSONResponse({"paused": svc.paused(),
                                 "message": f"{what}: {'paused' if action == 'pause' else 'resumed'}"})
        if action == "reload":
            try:
                count = request.app.state.auth.reload()
            except RosterError as exc:
                raise Rejected.detail(400, f"The roster was not reloaded (the old one stays): {exc}") \
                    from None
            logger.info("%s reloaded the roster (%d people)", actor, count)
            return JSONResponse({"people": count, "message": f"Roster reloaded: {count} people"})
        raise Rejected.detail(404, f"No dashboard action {action!r} (cancel, pause, resume, reload)")

    def gallery_items(request: Request, who: Person) -> list[dict[str, Any]]:
        svc = request.app.state.service
        return _gallery(svc.jobs(None if who.is_teacher else who.name), _GALLERY)

    @router.get("/_fluxnb/gallery", include_in_schema=False)
    async def gallery(request: Request) -> Response:
        who = viewer(request, teacher=False, page=True)
        if isinstance(who, Response):
            return who
        return _html(pages.gallery_page(gallery_items(request, who), owners=who.is_teacher,
                                        csrf=csrf_of(request), who=who.name))

    @router.get("/_fluxnb/gallery/state")
    async def gallery_state(request: Request) -> Response:
        who = viewer(request, teacher=False, page=False)
        assert isinstance(who, Person)
        return JSONResponse({"sections": pages.gallery_sections(gallery_items(request, who),
                                                                owners=who.is_teacher),
                             "updated": time.time()}, headers={"Cache-Control": "no-store"})

    return router
