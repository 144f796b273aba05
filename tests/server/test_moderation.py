"""Moderation (issue 11, item 6): ``--blocklist words.txt`` refuses a prompt holding a listed word
or phrase (whole words, any case, NFKC) with a 422 naming ``prompt``, counted in the stats."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fluxnb.server import BackgroundServer
from fluxnb.server.auth import new_roster, write_roster
from fluxnb.server.moderation import MODERATED_MESSAGE, Blocklist, BlocklistError

from ..support import ServeProcess, eventually
from .test_server_contract import SUBMIT, body

WORDS = "# words this class does not use\n\nclass\n  Red   Fox  \nc++\nÉCOLE\n"


@pytest.fixture
def words(tmp_path: Path) -> Path:
    path = tmp_path / "words.txt"
    path.write_text(WORDS, encoding="utf-8")
    return path


# -- matching ----------------------------------------------------------------------------------


def test_blank_lines_and_comments_are_not_entries() -> None:
    blocklist = Blocklist.parse(WORDS)
    assert len(blocklist) == 4
    assert not blocklist.matches("words this does not use")  # the comment's words are no entries
    assert not Blocklist.parse("# only a comment\n\n").matches("# only a comment")


@pytest.mark.parametrize("prompt", [
    "a class photo", "CLASS", "ClAsS, everyone!", "(class)", "first-class seats",
    "a red fox", "a RED\t\n  fox in snow", "red fox's tail",
    "ｃｌａｓｓ photo",  # full-width letters (NFKC)
    "cla\u00adss", "cla\u200bss",  # a soft hyphen, a zero-width space inside the word
    "écolé école", "E\u0301COLE",  # a decomposed É (NFKC composes it)
    "I write C++ code",
])
def test_listed_words_and_phrases_match(prompt: str) -> None:
    assert Blocklist.parse(WORDS).matches(prompt)


@pytest.mark.parametrize("prompt", [
    "a classic photo", "subclass", "classes", "class_room", "a redfox", "red, fox", "fox red",
    "c+", "c", "ecole", "a red barn and a fox", "",
])
def test_no_false_positives(prompt: str) -> None:
    assert not Blocklist.parse(WORDS).matches(prompt)


def test_case_folding_reaches_beyond_ascii() -> None:
    blocklist = Blocklist(["strasse"])
    assert blocklist.matches("die STRASSE") and blocklist.matches("die Straße")


def test_big_list_and_long_prompt_stay_cheap() -> None:
    blocklist = Blocklist([f"word{i}" for i in range(20_000)] + ["one two three four"])
    assert blocklist.matches("x " * 5_000 + "one two  three four")
    assert not blocklist.matches("word " * 20_000)


def test_reload_swaps_the_list_and_keeps_it_when_the_file_goes_bad(words: Path) -> None:
    blocklist = Blocklist.load(words)
    assert blocklist.matches("class") and not blocklist.matches("banana")
    words.write_text("banana\n", encoding="utf-8")
    assert blocklist.reload() == 1
    assert blocklist.matches("Banana bread") and not blocklist.matches("class")
    words.write_bytes(b"\xff\xfe bad")
    with pytest.raises(BlocklistError, match="cannot read the blocklist"):
        blocklist.reload()
    assert blocklist.matches("banana")
    assert "banana" not in repr(blocklist)


def test_overlong_entry_is_named_by_line() -> None:
    with pytest.raises(BlocklistError, match=r"list:3: an entry of 201 characters; at most 200"):
        Blocklist.parse("ok\n\n" + "x" * 201, "list")


# -- through a real server ---------------------------------------------------------------------


def test_a_blocked_prompt_is_a_422_naming_prompt_and_counted(
        words: Path, server_factory: Callable[..., BackgroundServer]) -> None:
    server = server_factory(engine="null", blocklist=str(words))
    url = server.base_url + SUBMIT
    for prompt in ("our CLASS trip", "a red   fox", "ｃｌａｓｓ"):
        r = httpx.post(url, json=body(prompt=prompt))
        assert r.status_code == 422, r.text
        # the whole answer is one fixed text: neither the list nor the matched word is in it
        assert r.json() == {"detail": [{"loc": ["body", "prompt"], "msg": MODERATED_MESSAGE,
                                        "type": "prompt_not_allowed"}]}
        assert all(w not in r.text.lower() for w in ("fox", "c++", "école"))
    for prompt in ("a classic photo", "a red barn"):
        assert httpx.post(url, json=body(prompt=prompt)).status_code == 200
    run = httpx.post(server.base_url + "/_fluxnb/run" + SUBMIT, json=body(prompt="Class"))
    assert run.status_code == 422 and run.json()["detail"][0]["loc"] == ["body", "prompt"]
    jobs = httpx.get(server.base_url + "/_fluxnb/stats").json()["jobs"]
    assert jobs["moderated"] == 4 and jobs["rejected"] == 4 and jobs["submitted"] == 2
    assert len(server.service.jobs()) == 2


def test_a_bad_body_is_rejected_but_not_moderated(
        words: Path, server_factory: Callable[..., BackgroundServer]) -> None:
    server = server_factory(engine="null", blocklist=str(words))
    r = httpx.post(server.base_url + SUBMIT, json={"prompt": "class"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] != ["body", "prompt"]
    jobs = server.service.stats["jobs"]
    assert jobs["rejected"] == 1 and jobs["moderated"] == 0


def test_without_a_blocklist_nothing_is_moderated(
        server_factory: Callable[..., BackgroundServer]) -> None:
    server = server_factory(engine="null")
    assert httpx.post(server.base_url + SUBMIT, json=body(prompt="class")).status_code == 200
    assert server.service.stats["jobs"]["moderated"] == 0


def test_a_students_blocked_prompt_on_a_roster_server(
        words: Path, tmp_path: Path, server_factory: Callable[..., BackgroundServer]) -> None:
    student, teacher = new_roster(1, teachers=1)
    roster = write_roster(tmp_path / "roster.csv", [student, teacher])
    server = server_factory(engine="null", blocklist=str(words), roster=str(roster))
    r = httpx.post(server.base_url + SUBMIT, json=body(prompt="C++ class"),
                   headers={"Authorization": f"Key {student.token}"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prompt"]
    assert student.token not in r.text
    stats = httpx.get(server.base_url + "/_fluxnb/stats",
                      headers={"Authorization": f"Key {teacher.token}"}).json()
    assert stats["jobs"]["moderated"] == 1


def test_sighup_reloads_the_blocklist_of_fluxnb_serve(words: Path, tmp_path: Path) -> None:
    student, teacher = new_roster(1, teachers=1)
    roster = write_roster(tmp_path / "roster.csv", [student, teacher])
    headers = {"Authorization": f"Key {student.token}"}
    with ServeProcess(["--engine", "null", "--roster", str(roster), "--blocklist", str(words)],
                      token=teacher.token, log=tmp_path / "serve.log") as srv:
        def code(prompt: str) -> int:
            return httpx.post(srv.base_url + SUBMIT, json=body(prompt=prompt),
                              headers=headers).status_code

        assert code("banana") == 200 and code("class") == 422
        words.write_text("banana\n", encoding="utf-8")
        srv.proc.send_signal(signal.SIGHUP)
        eventually(lambda: code("banana") == 422, 15, lambda: srv.output(), interval=0.2)
        assert code("class") == 200
        assert srv.proc.poll() is None
    assert "blocklist reloaded: 1 entries" in srv.output()
    assert "banana" not in srv.output()


def test_fluxnb_serve_refuses_an_unreadable_blocklist(tmp_path: Path) -> None:
    bad = tmp_path / "words.txt"
    bad.write_bytes(b"\xff\xfe not utf-8")
    done = subprocess.run([sys.executable, "-m", "fluxnb", "serve", "--engine", "null",
                           "--port", "0", "--blocklist", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"--blocklist {bad}: cannot read the blocklist" in done.stderr
    assert "UTF-8" in done.stderr and "Traceback" not in done.stderr
