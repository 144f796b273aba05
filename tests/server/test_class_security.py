"""A student's and an outsider's attacks on the class server (issue 11, item 10), on loopback:
each finding of the security pass is a test here, and a bounded fuzz over the submit, dashboard
and login routes of a roster server asserts that no input gets a 5xx."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fluxnb.server import BackgroundServer
from fluxnb.server.auth import Person, new_roster, write_roster
from fluxnb.server.config import ServerConfig
from fluxnb.server.dashboard import CSRF_HEADER
from fluxnb.server.moderation import Blocklist
from fluxnb.server.quota import Quota, output_megapixels
from fluxnb.server.sessions import Sessions

from .test_server_contract import SUBMIT, body

Factory = Callable[..., BackgroundServer]


def _key(person: Person) -> dict[str, str]:
    return {"Authorization": f"Key {person.token}"}


@pytest.fixture
def school(tmp_path: Path, server_factory: Factory) -> tuple[BackgroundServer, list[Person]]:
    people = new_roster(2, teachers=1)
    (tmp_path / "words.txt").write_text("fox\n", encoding="utf-8")
    server = server_factory(engine="null", workers=1, budget_mp=5.0,
                            roster=str(write_roster(tmp_path / "roster.csv", people)),
                            blocklist=str(tmp_path / "words.txt"))
    return server, people


def _status_line(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.partition(b"\r\n")[0]


# -- findings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["\xb2", "\xb2\xb3", "\xb9"])
def test_a_host_port_of_other_digits_is_refused_not_a_500(server_factory: Factory,
                                                          port: str) -> None:
    laptop = server_factory(engine="null")
    request = (f"GET /_fluxnb/info HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Connection: close\r\n\r\n").encode("latin-1")
    assert _status_line(laptop.port, request).startswith(b"HTTP/1.1 421")


def test_a_lone_surrogate_in_a_dashboard_action_is_422_and_the_dashboard_stays_up(
        school: tuple[BackgroundServer, list[Person]]) -> None:
    server, (_, _, teacher) = school
    headers = {**_key(teacher), CSRF_HEADER: "1", "Content-Type": "application/json"}
    for action, raw in (("pause", b'{"owner": "\\ud800"}'), ("cancel", b'{"id": "\\udfff"}')):
        r = httpx.post(server.base_url + f"/_fluxnb/dashboard/{action}", content=raw,
                       headers=headers)
        assert r.status_code == 422, r.text
        assert "valid Unicode" in r.json()["detail"]
    assert server.service.paused()["owners"] == []
    assert httpx.get(server.base_url + "/_fluxnb/dashboard/state",
                     headers=_key(teacher)).status_code == 200


@pytest.mark.parametrize("raw", [b"&" * 5000, b"token=a&token=b&token=c&token=d&token=e"])
def test_a_login_form_of_many_fields_is_400_not_500(
        school: tuple[BackgroundServer, list[Person]], raw: bytes) -> None:
    server, _ = school
    r = httpx.post(server.base_url + "/_fluxnb/login", content=raw,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "at most 4 fields" in r.json()["detail"]


def test_one_persons_logins_cannot_log_the_others_out() -> None:
    sessions = Sessions()
    teacher, _ = sessions.new("teacher-token")
    flood = [sessions.new("student-token")[0] for _ in range(10_050)]
    assert sessions.get(teacher) is not None  # before: pushed out after 10,000 student logins
    assert sessions.get(flood[-1]) is not None and sessions.get(flood[0]) is None
    assert sum(sessions.get(sid) is not None for sid in flood[-40:]) == 16


@pytest.mark.parametrize("prompt", [
    "a f\u034fox",  # a combining grapheme joiner (invisible)
    "a fo\ufe0fx",  # a variation selector (invisible)
    "a fo\U000e0100x",  # a variation selector supplement
    "a f\u0301ox",  # a stray combining accent inside the word
    "a f\u3164ox",  # a Hangul filler (invisible)
])
def test_invisible_marks_do_not_slip_past_the_blocklist(prompt: str) -> None:
    assert Blocklist(["fox"]).matches(prompt)
    assert not Blocklist(["fox"]).matches(prompt.replace("o", "a"))


def test_a_job_that_made_more_than_its_estimate_is_charged_what_it_made() -> None:
    quota = Quota(ServerConfig(roster="r.csv", budget_mp=20.0))
    ada = Person("ada", "student")
    quota.admit("j1", "ada", (1000, 1000, 1), person=ada, waiting=0)  # an image_url: 1 MP guessed
    made = output_megapixels({"images": [{"width": 4000, "height": 2000}] * 2})
    quota.finish("j1", ran=True, megapixels=made)
    assert quota.ledger.used("ada")[0] == pytest.approx(16.0)
    quota.admit("j2", "ada", (500, 500, 1), person=ada, waiting=0)
    quota.finish("j2", ran=True, megapixels=0.1)  # less than charged: the charge stays
    assert quota.ledger.used("ada")[0] == pytest.approx(16.25)


# -- no input gets a 5xx: a bounded fuzz of a roster server ------------------------------------

_ODD = [None, True, -1, 0, 2**63, 10**30, 1e308, -1e-320, 4.0, "", "\x00", "\ud800",
        "\u202e\u034f", "a" * 3000, "NaN", "square_hd", "data:", "ftp://x/y.png",
        "file:///etc/passwd", "http://127.0.0.1:1/x.png", [], [[[[]]]], {}, {"width": 64},
        {"width": 64, "height": 64}, [{"path": "../../etc/passwd"}] * 3,
        [{"path": "x", "scale": "\ud800"}], "\U0001f98a" * 50]
_FIELDS = ["prompt", "image_url", "mask_url", "num_inference_steps", "guidance_scale",
           "strength", "num_images", "enable_safety_checker", "output_format", "seed",
           "image_size", "loras", "sync_mode", "\ud800", "x" * 300]
_HEADERS = [("X-Fal-Request-Timeout", "1e300"), ("X-Fal-Request-Timeout", "\xb2"),
            ("X-Fal-Request-Timeout", "-0"), ("X-Fal-Request-Timeout", "1e-320"),
            ("X-Fal-Queue-Priority", "\xff"), ("X-Fal-Queue-Priority", "LOW"),
            ("Host", "127.0.0.1:\xb2"), ("Host", "[::1"), ("Content-Type", "text/plain"),
            ("Content-Type", "application/json; charset=\xff")]


def _fuzz_body(rng: random.Random) -> bytes:
    params: dict[str, Any] = body() if rng.random() < 0.5 else {}
    for _ in range(rng.randint(1, 4)):
        params[rng.choice(_FIELDS)] = rng.choice(_ODD)
    text = json.dumps(params)
    cut = rng.random()
    if cut < 0.1:
        return text[: rng.randint(0, len(text))].encode("utf-8", "surrogatepass")
    if cut < 0.15:
        return b"[" * 50_000
    return text.encode("utf-8", "surrogatepass")


def test_a_bounded_fuzz_of_a_roster_server_never_gets_a_5xx(
        school: tuple[BackgroundServer, list[Person]]) -> None:
    server, (ada, _, teacher) = school
    rng = random.Random(11)
    auths = [_key(ada), _key(teacher), {"Authorization": "Key \xff"}, {}]
    seen: dict[int, int] = {}
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for i in range(160):
            headers = {"Content-Type": "application/json", **rng.choice(auths)}
            if rng.random() < 0.4:
                name, value = rng.choice(_HEADERS)
                headers[name] = value
            encoded = {k: v.encode("latin-1") for k, v in headers.items()}
            target = rng.choice([SUBMIT, "/_fluxnb/run" + SUBMIT, "/_fluxnb/dashboard/pause",
                                 "/_fluxnb/dashboard/cancel", "/_fluxnb/login"])
            if "dashboard" in target:
                encoded[CSRF_HEADER] = b"1"
            r = client.post(target, content=_fuzz_body(rng), headers=encoded)
            seen[r.status_code] = seen.get(r.status_code, 0) + 1
            assert r.status_code < 500, (i, target, r.status_code, r.text[:300])
        server.service.resume(None)
        assert client.get("/_fluxnb/dashboard/state", headers=_key(teacher)).status_code == 200
    assert len(seen) > 3  # the fuzz reached more than one kind of answer
