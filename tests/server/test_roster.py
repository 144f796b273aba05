"""The class roster (issue 11, items 1-2): one token per person, and a student sees only their own
jobs; info, stats and the docs are the teacher's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fluxnb.server import BackgroundServer, ServerConfig
from fluxnb.server.auth import Auth, Person, RosterError, load_roster, new_roster, write_roster

from ..conftest import make_test_image, make_test_mask
from ..support import ServeProcess, eventually, self_signed_cert, tls_context
from .test_server_contract import HOW_TO_PASS_A_KEY, SUBMIT, body

HERE = Path(__file__).resolve().parents[1]


def key(person: Person) -> dict[str, str]:
    return {"Authorization": f"Key {person.token}"}


@pytest.fixture
def roster(tmp_path: Path) -> tuple[Path, list[Person]]:
    people = new_roster(2, teachers=1)
    return write_roster(tmp_path / "roster.csv", people), people


@pytest.fixture
def classroom(roster: tuple[Path, list[Person]],
              server_factory: Callable[..., BackgroundServer]) -> tuple[BackgroundServer, list[Person]]:
    path, people = roster
    # a slow null engine and one worker: a second job stays queued long enough to cancel
    server = server_factory(engine="null", roster=str(path), workers=1,
                            engine_options={"delay": 0.3})
    return server, people


def submit(server: BackgroundServer, person: Person, **extra: Any) -> dict[str, Any]:
    r = httpx.post(server.base_url + SUBMIT, json=body(**extra), headers=key(person))
    assert r.status_code == 200, r.text
    return r.json()


def done(job: dict[str, Any], person: Person) -> dict[str, Any]:
    def completed() -> dict[str, Any] | None:
        status = httpx.get(job["status_url"], headers=key(person)).json()
        return status if status["status"] == "COMPLETED" else None
    return eventually(completed, 30)


# -- the roster file ---------------------------------------------------------------------------


def test_new_roster_is_private_and_parses_back(tmp_path: Path) -> None:
    people = new_roster(12, teachers=2)
    path = write_roster(tmp_path / "r.csv", people)
    assert path.read_text().splitlines()[0] == "name,role,token"
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_roster(path) == people
    assert [p.name for p in people][:2] == ["student01", "student02"]
    assert {p.role for p in people} == {"student", "teacher"} and people[-1].name == "teacher02"
    assert len({p.token for p in people}) == 14 and min(len(p.token) for p in people) >= 40
    assert all(p.token not in repr(p) for p in people)
    with pytest.raises(FileExistsError):
        write_roster(path, new_roster(1))
    write_roster(path, new_roster(1), force=True)
    assert len(load_roster(path)) == 2


def test_optional_limit_columns_are_kept_and_bad_lines_named(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("name,role,token,max_queued,budget_mp,budget_usd\n"
                    f"ada,student,{'a' * 20},2,50.5,\n"
                    f"bob,teacher,{'b' * 20},,,1.25\n")
    ada, bob = load_roster(path)
    assert (ada.max_queued, ada.budget_mp, ada.budget_usd) == (2, 50.5, None)
    assert (bob.max_queued, bob.budget_usd, bob.is_teacher) == (None, 1.25, True)
    bad = {
        f"ada,student,{'a' * 20},two,,\n": "max_queued",
        f"ada,student,{'a' * 20},,-1,\n": "budget_mp",
        f"ada,admin,{'a' * 20},,,\n": "role",
        "ada,student,short,,,\n": "token",
        f"ada,student,{'a' * 20},,,\nada,student,{'c' * 20},,,\n": "twice",
    }
    for rows, word in bad.items():
        path.write_text("name,role,token,max_queued,budget_mp,budget_usd\n" + rows)
        with pytest.raises(RosterError, match=word) as info:
            load_roster(path)
        assert f"{path}:" in str(info.value)  # the line is named
    path.write_text("name,token\nada,xxxxxxxxxxxxxxxxxxxxxx\n")
    with pytest.raises(RosterError, match=r":1: the header lacks role"):
        load_roster(path)


# -- tokens and isolation over HTTP ------------------------------------------------------------


def test_unknown_or_missing_token_is_401_saying_how_to_pass_one(classroom) -> None:
    server, (ada, _, _) = classroom
    for headers in ({}, {"Authorization": "Key not-on-the-roster"}, {"Authorization": "Bearer x"}):
        r = httpx.post(server.base_url + SUBMIT, json=body(), headers=headers)
        assert r.status_code == 401 and list(r.json()) == ["detail"], r.text
        for hint in HOW_TO_PASS_A_KEY:
            assert hint in r.json()["detail"]
    job = submit(server, ada)
    assert httpx.get(job["status_url"]).status_code == 401


def test_a_student_sees_only_their_own_jobs_and_files(classroom) -> None:
    server, (ada, bob, teacher) = classroom
    first = submit(server, ada)
    queued = submit(server, ada)  # behind `first` on the one worker
    done(first, ada)
    answer = httpx.get(first["response_url"], headers=key(ada))
    assert answer.status_code == 200
    file_url = answer.json()["images"][0]["url"]
    assert httpx.get(file_url, headers=key(ada)).status_code == 200
    assert server.service.get(first["request_id"]).owner == "student01"

    for url in (first["status_url"], first["status_url"] + "/stream", first["response_url"],
                file_url):
        r = httpx.get(url, headers=key(bob))
        assert r.status_code == 404, (url, r.status_code)
        assert "student01" not in r.text
    assert httpx.put(queued["cancel_url"], headers=key(bob)).status_code == 404
    assert httpx.get(file_url).status_code == 401  # in roster mode a file needs a token too
    # the teacher sees (and may cancel) every job; ada's own cancel works
    assert httpx.get(first["response_url"], headers=key(teacher)).status_code == 200
    assert httpx.get(file_url, headers=key(teacher)).status_code == 200
    assert httpx.put(queued["cancel_url"], headers=key(ada)).status_code in (202, 400)


def test_info_stats_and_docs_are_the_teachers(classroom) -> None:
    server, (ada, _, teacher) = classroom
    for path in ("/_fluxnb/info", "/_fluxnb/stats", "/_fluxnb/docs", "/_fluxnb/openapi.json"):
        url = server.base_url + path
        assert httpx.get(url).status_code == 401, path
        assert httpx.get(url, headers=key(ada)).status_code == 403, path
        assert httpx.get(url, headers=key(teacher)).status_code == 200, path
    assert httpx.get(server.base_url + "/_fluxnb/info",
                     headers=key(teacher)).json()["auth"] is True


def test_keyed_server_info_needs_the_key_and_open_server_stays_open(
        server_factory: Callable[..., BackgroundServer]) -> None:
    keyed = server_factory(engine="null", key="class-" + os.urandom(6).hex())
    assert httpx.get(keyed.base_url + "/_fluxnb/stats").status_code == 401
    assert httpx.get(keyed.base_url + "/_fluxnb/docs").status_code == 401
    assert httpx.get(keyed.base_url + "/_fluxnb/info", headers={
        "Authorization": f"Key {keyed.config.key}"}).status_code == 200
    laptop = server_factory(engine="null")
    for path in ("/_fluxnb/info", "/_fluxnb/stats", "/_fluxnb/docs", "/_fluxnb/openapi.json"):
        assert httpx.get(laptop.base_url + path).status_code == 200, path


def test_reload_adds_a_person_and_keeps_the_old_roster_when_bad(roster, tmp_path: Path) -> None:
    path, people = roster
    auth = Auth(roster_path=path)
    newcomer = new_roster(1, teachers=0)[0]
    newcomer = Person("student03", "student", newcomer.token)
    assert auth.identify(f"Key {newcomer.token}") is None
    write_roster(path, [*people, newcomer], force=True)
    assert auth.reload() == 4
    assert auth.identify(f"Key {newcomer.token}") == newcomer
    path.write_text("name,role,token\nbroken,nobody,x\n")
    with pytest.raises(RosterError, match=":2:"):
        auth.reload()
    assert auth.identify(f"Key {newcomer.token}") == newcomer
    with pytest.raises(ValueError):
        ServerConfig(key="k", roster=str(path))


def test_sighup_reloads_the_roster_of_fluxnb_serve(roster, tmp_path: Path) -> None:
    path, people = roster
    teacher = people[-1]
    newcomer = Person("student03", "student", new_roster(1, teachers=0)[0].token)
    probe = f"/fal-ai/flux-lora/inpainting/requests/{'0' * 8}/status"
    with ServeProcess(["--engine", "null", "--roster", str(path)], token=teacher.token,
                      log=tmp_path / "serve.log") as srv:
        assert httpx.get(srv.base_url + probe, headers=key(newcomer)).status_code == 401
        write_roster(path, [*people, newcomer], force=True)
        srv.proc.send_signal(signal.SIGHUP)
        eventually(lambda: httpx.get(srv.base_url + probe, headers=key(newcomer)).status_code
                   == 404, 15, lambda: srv.output())
        r = httpx.post(srv.base_url + SUBMIT, json=body(), headers=key(newcomer))
        assert r.status_code == 200
        assert srv.proc.poll() is None
    assert "roster reloaded: 4 people" in srv.output()
    assert all(p.token not in srv.output() for p in [*people, newcomer])


@pytest.mark.slow
def test_official_fal_client_works_with_a_student_token(roster, tmp_path: Path) -> None:
    """The conformance probe (test_fal_client_conformance.py) with FAL_KEY = a student's token."""
    path, (ada, _, teacher) = roster
    cert, cert_key = self_signed_cert(tmp_path)
    image, mask = tmp_path / "image.png", tmp_path / "mask.png"
    make_test_image(96, 64).save(image)
    make_test_mask(96, 64).save(mask)
    server = ServeProcess(["--engine", "null", "--engine-option", "delay=0.15", "--workers", "1",
                           "--roster", str(path)], cert=cert, key=cert_key, token=teacher.token,
                          log=tmp_path / "server.log")
    with server:
        env = dict(os.environ, FAL_KEY=ada.token, FAL_QUEUE_RUN_HOST=f"127.0.0.1:{server.port}",
                   FAL_RUN_HOST=f"127.0.0.1:{server.port}/_fluxnb/run",
                   SSL_CERT_FILE=str(cert), NO_PROXY="127.0.0.1,localhost")
        ran = subprocess.run([sys.executable, str(HERE / "fal_client_probe.py"), str(image),
                              str(mask)], env=env, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr[-3000:]
        seen = json.loads(ran.stdout)
        url = seen["subscribe"]["images"][0]["url"]
        verify = tls_context(cert)
        assert httpx.get(url, verify=verify, headers=key(ada)).status_code == 200
        assert httpx.get(url, verify=verify).status_code == 401
    assert seen["subscribe"]["seed"] == 7 and seen["subscribe"]["prompt"] == "a red fox"
    assert ada.token not in server.output()
