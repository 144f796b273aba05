"""The teacher's dashboard, the gallery and the login cookie over HTTP (issue 11, item 5): who may
open what (401/403/200), the cookie's flags and reach, the actions and their CSRF guard, and the
escaping of every user-given string."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fluxnb.server import BackgroundServer
from fluxnb.server.auth import Person, new_roster, roster_csv, write_roster
from fluxnb.server.dashboard import COOKIE, CSRF_HEADER

from ..support import eventually, self_signed_cert, tls_context
from .test_server_contract import SUBMIT, body

EVIL = "<script>alert('x')</script> & \"quotes\""


def key(person: Person) -> dict[str, str]:
    return {"Authorization": f"Key {person.token}"}


@pytest.fixture
def classroom(tmp_path: Path, server_factory: Callable[..., BackgroundServer]
              ) -> tuple[BackgroundServer, list[Person], Path]:
    people = new_roster(2, teachers=1)
    path = write_roster(tmp_path / "roster.csv", people)
    server = server_factory(engine="null", roster=str(path), workers=1,
                            engine_options={"delay": 0.3})
    return server, people, path


def submit(server: BackgroundServer, person: Person, **extra: Any) -> dict[str, Any]:
    r = httpx.post(server.base_url + SUBMIT, json=body(**extra), headers=key(person))
    assert r.status_code == 200, r.text
    return r.json()


def wait_done(server: BackgroundServer, job: dict[str, Any]) -> None:
    eventually(lambda: server.service.get(job["request_id"]).state == "COMPLETED", 30)


@pytest.fixture
def logged_in() -> Iterator[Callable[[BackgroundServer, Person], tuple[httpx.Client, str]]]:
    """``logged_in(server, person)``: a client holding ``person``'s login cookie, and the page's
    CSRF token (the clients are closed at the end)."""
    clients: list[httpx.Client] = []

    def login(server: BackgroundServer, person: Person) -> tuple[httpx.Client, str]:
        clients.append(httpx.Client(base_url=server.base_url))
        return _login(clients[-1], person)

    yield login
    for client in clients:
        client.close()


def _login(client: httpx.Client, person: Person) -> tuple[httpx.Client, str]:
    r = client.post("/_fluxnb/login", data={"token": person.token})
    assert r.status_code == 303, r.text
    page = client.get(r.headers["location"])
    assert page.status_code == 200, page.text
    csrf = re.search(r'<meta name="fluxnb-csrf" content="([^"]*)"', page.text)
    assert csrf is not None
    return client, csrf.group(1)


def test_the_dashboard_is_a_teachers_and_asks_the_others_to_log_in(classroom) -> None:
    server, (ada, _, teacher), _ = classroom
    url = server.base_url + "/_fluxnb/dashboard"
    r = httpx.get(url)
    assert r.status_code == 401 and "personal token" in r.json()["detail"]
    r = httpx.get(url, headers={"Accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"] == "/_fluxnb/login?next=/_fluxnb/dashboard"
    login = httpx.get(server.base_url + r.headers["location"])
    assert login.status_code == 200 and 'type="password"' in login.text
    for accept in ("application/json", "text/html"):
        r = httpx.get(url, headers={**key(ada), "Accept": accept})
        assert r.status_code == 403 and "/_fluxnb/gallery" in r.text, r.text
    assert httpx.get(url + "/state", headers=key(ada)).status_code == 403
    r = httpx.get(url, headers=key(teacher))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "<h2>Queue</h2>" in r.text and "student01" in r.text and teacher.token not in r.text
    state = httpx.get(url + "/state", headers=key(teacher)).json()
    assert {"queue-rows", "running-rows", "usage-rows", "gallery", "summary"} <= set(state["sections"])
    # the page's own script and stylesheet come from the server (works offline)
    for asset in ("dashboard.js", "style.css"):
        assert httpx.get(f"{server.base_url}/_fluxnb/pages/{asset}").status_code == 200
    assert "http" not in re.sub(r"https?://127\.0\.0\.1", "", r.text.split("<body>")[0])


def test_the_roster_401_asks_for_your_personal_token(classroom) -> None:
    server, _, _ = classroom
    for headers in ({}, {"Authorization": "Key not-on-the-roster"}):
        detail = httpx.post(server.base_url + SUBMIT, json=body(), headers=headers).json()["detail"]
        assert "personal token" in detail and "Ask whoever runs this server" not in detail
        assert all(h in detail for h in ("fluxnb.connect(url, key=...)", "FLUXNB_KEY", "FAL_KEY"))


def test_login_sets_a_strict_httponly_session_cookie_that_logout_clears(classroom, logged_in) -> None:
    server, (ada, _, teacher), _ = classroom
    r = httpx.post(server.base_url + "/_fluxnb/login", data={"token": "wrong-token-1234567890"})
    assert r.status_code == 401 and "not on this server&#x27;s roster" in r.text
    assert COOKIE not in r.headers.get("set-cookie", "")
    r = httpx.post(server.base_url + "/_fluxnb/login", data={"token": teacher.token})
    assert r.status_code == 303 and r.headers["location"] == "/_fluxnb/dashboard"
    cookie = r.headers["set-cookie"]
    flags = {f.strip().lower() for f in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/_fluxnb"} <= flags and "secure" not in flags
    assert teacher.token not in cookie
    client, _ = logged_in(server, teacher)
    assert client.get("/_fluxnb/dashboard").status_code == 200
    assert client.get("/_fluxnb/stats").status_code == 200
    # a student lands on their gallery; the dashboard stays a teacher's
    student, _ = logged_in(server, ada)
    assert student.get("/_fluxnb/dashboard").status_code == 403
    assert student.get("/_fluxnb/gallery").status_code == 200
    r = client.post("/_fluxnb/logout")
    assert r.status_code == 303 and COOKIE in r.headers["set-cookie"]
    assert 'max-age=0' in r.headers["set-cookie"].lower() or "expires" in r.headers["set-cookie"].lower()
    assert client.get("/_fluxnb/dashboard/state").status_code == 401


def test_the_cookie_counts_for_pages_and_files_but_never_for_the_queue_api(classroom, logged_in) -> None:
    server, (ada, bob, _), _ = classroom
    job = submit(server, ada)
    wait_done(server, job)
    student, _ = logged_in(server, ada)
    url = httpx.get(job["response_url"], headers=key(ada)).json()["images"][0]["url"]
    path = url.removeprefix(server.base_url)
    assert student.get(path).status_code == 200  # a thumbnail in the gallery page
    assert path in student.get("/_fluxnb/gallery").text
    assert student.post(SUBMIT, json=body()).status_code == 401
    assert student.get(job["status_url"]).status_code == 401
    assert student.put(job["cancel_url"]).status_code == 401
    assert student.post("/_fluxnb/run" + SUBMIT, json=body()).status_code == 401
    other, _ = logged_in(server, bob)
    assert other.get(path).status_code == 404  # another's file: nothing to see


def test_actions_need_the_csrf_token_and_a_same_site_origin(classroom, logged_in) -> None:
    server, (ada, _, teacher), _ = classroom
    running, queued = submit(server, ada), submit(server, ada)
    client, csrf = logged_in(server, teacher)
    cancel = {"id": queued["request_id"]}
    assert csrf and client.post("/_fluxnb/dashboard/cancel", json=cancel).status_code == 403
    r = client.post("/_fluxnb/dashboard/cancel", json=cancel, headers={CSRF_HEADER: "forged"})
    assert r.status_code == 403 and "does not match" in r.json()["detail"]
    r = client.post("/_fluxnb/dashboard/cancel", json=cancel,
                    headers={CSRF_HEADER: csrf, "Origin": "https://evil.example"})
    assert r.status_code == 403 and "another site" in r.json()["detail"]
    # what a cross-site form can send: a simple content type, no custom header
    r = client.post("/_fluxnb/dashboard/cancel", content=f"id={queued['request_id']}",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 403
    assert server.service.get(queued["request_id"]).state == "IN_QUEUE"
    r = client.post("/_fluxnb/dashboard/cancel", json=cancel, headers={CSRF_HEADER: csrf})
    assert r.status_code == 200 and r.json()["status"] == "CANCELLATION_REQUESTED"
    assert server.service.get(queued["request_id"]).error_type == "request_cancelled"
    assert "cancelled" in client.get("/_fluxnb/dashboard").text
    # with the header instead of the cookie; a student may not
    r = httpx.post(server.base_url + "/_fluxnb/dashboard/cancel", json={"id": running["request_id"]},
                   headers={**key(ada), CSRF_HEADER: "1"})
    assert r.status_code == 403 and server.service.get(running["request_id"]).error is None
    r = httpx.post(server.base_url + "/_fluxnb/dashboard/cancel", json={"id": "no-such-job"},
                   headers={**key(teacher), CSRF_HEADER: "1"})
    assert r.status_code == 404 and "no-such-job" in r.json()["detail"]


def test_pause_and_resume_one_student_and_the_queue(classroom) -> None:
    server, (ada, _, teacher), _ = classroom
    headers = {**key(teacher), CSRF_HEADER: "1"}

    def act(action: str, **payload: Any) -> dict[str, Any]:
        r = httpx.post(f"{server.base_url}/_fluxnb/dashboard/{action}", json=payload, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()

    assert act("pause", owner=ada.name)["paused"]["owners"] == [ada.name]
    assert "(paused)" in httpx.get(server.base_url + "/_fluxnb/dashboard", headers=key(teacher)).text
    assert act("resume", owner=ada.name)["paused"]["owners"] == []
    assert act("pause")["paused"]["queue"] is True
    assert "Resume the queue" in httpx.get(server.base_url + "/_fluxnb/dashboard/state",
                                           headers=key(teacher)).json()["sections"]["queue-actions"]
    assert act("resume")["paused"]["queue"] is False
    r = httpx.post(server.base_url + "/_fluxnb/dashboard/pause", json={"owner": 7}, headers=headers)
    assert r.status_code == 422 and "owner" in r.json()["detail"]
    r = httpx.post(server.base_url + "/_fluxnb/dashboard/explode", json={}, headers=headers)
    assert r.status_code == 404 and "cancel, pause, resume, reload" in r.json()["detail"]


def test_reload_the_roster_shows_a_bad_files_message(classroom) -> None:
    server, (_, _, teacher), path = classroom
    headers = {**key(teacher), CSRF_HEADER: "1"}
    url = server.base_url + "/_fluxnb/dashboard/reload"
    path.write_text("name,role,token\nada,wizard,xxxxxxxxxxxxxxxxxxxxxxxx\n")
    r = httpx.post(url, json={}, headers=headers)
    assert r.status_code == 400 and "role must be student or teacher" in r.json()["detail"]
    assert ":2:" in r.json()["detail"]
    newcomer = new_roster(1)[0]
    path.write_text(roster_csv([teacher, Person("newcomer", "student", newcomer.token)]))
    r = httpx.post(url, json={}, headers=headers)
    assert r.status_code == 200 and r.json()["people"] == 2
    assert "newcomer" in httpx.get(server.base_url + "/_fluxnb/dashboard", headers=key(teacher)).text


def test_every_prompt_is_escaped_on_every_page(classroom) -> None:
    server, (ada, _, teacher), _ = classroom
    done = submit(server, ada, prompt=EVIL)
    wait_done(server, done)
    submit(server, ada, prompt=EVIL)
    submit(server, ada, prompt=EVIL)
    pages = [httpx.get(server.base_url + "/_fluxnb/dashboard", headers=key(teacher)).text,
             *httpx.get(server.base_url + "/_fluxnb/dashboard/state",
                        headers=key(teacher)).json()["sections"].values(),
             httpx.get(server.base_url + "/_fluxnb/gallery", headers=key(ada)).text]
    for text in pages:
        assert "<script>alert" not in text and "\"quotes\"" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in pages[0]
    assert "&lt;script&gt;alert" in pages[-1]


def test_each_person_sees_their_own_gallery_and_a_teacher_everyones(classroom) -> None:
    server, (ada, bob, teacher), _ = classroom
    jobs = [submit(server, ada, prompt="ada's fox"), submit(server, bob, prompt="bob's owl")]
    for job in jobs:
        wait_done(server, job)
    mine = httpx.get(server.base_url + "/_fluxnb/gallery", headers=key(ada)).text
    assert "ada&#x27;s fox" in mine and "bob" not in mine
    state = httpx.get(server.base_url + "/_fluxnb/gallery/state", headers=key(bob)).json()
    assert "bob&#x27;s owl" in state["sections"]["gallery"] and "fox" not in state["sections"]["gallery"]
    everyone = httpx.get(server.base_url + "/_fluxnb/gallery", headers=key(teacher)).text
    assert "fox" in everyone and "owl" in everyone and "student02" in everyone
    assert httpx.get(server.base_url + "/_fluxnb/gallery").status_code == 401


def test_the_cookie_is_secure_over_tls(tmp_path: Path, server_factory) -> None:
    people = new_roster(1)
    cert, pem = self_signed_cert(tmp_path)
    server = server_factory(engine="null", roster=str(write_roster(tmp_path / "r.csv", people)),
                            certfile=str(cert), keyfile=str(pem))
    r = httpx.post(server.base_url + "/_fluxnb/login", data={"token": people[-1].token},
                   verify=tls_context(cert))
    flags = {f.strip().lower() for f in r.headers["set-cookie"].split(";")}
    assert r.status_code == 303 and "secure" in flags
