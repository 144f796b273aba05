"""Quotas and budgets (issue 11, item 4): per-person waiting jobs and budgets, the server's caps,
429s in fal's shape with ``Retry-After``, refunds, and the usage the dashboard shows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from fluxnb.server import BackgroundServer, ServerConfig
from fluxnb.server.app import RUN_PREFIX
from fluxnb.server.auth import Person, new_roster, roster_csv
from fluxnb.server.quota import Ledger, Quota, QuotaExceeded, requested_size

from ..support import eventually
from .test_server_contract import SUBMIT, body

IMAGE_MP = 96 * 64 / 1e6  # the test image of body(): what one job asks for


def key(person: Person) -> dict[str, str]:
    return {"Authorization": f"Key {person.token}"}


def post(server: BackgroundServer, person: Person, path: str = SUBMIT,
         **extra: Any) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body(**extra), headers=key(person))


def write(tmp_path: Path, people: list[Person], overrides: dict[str, dict[str, Any]]) -> Path:
    """A roster with the optional limit columns (``overrides``: name -> {column: value})."""
    columns = ("max_queued", "budget_mp", "budget_usd")
    lines = roster_csv(people).splitlines()
    rows = [lines[0] + "," + ",".join(columns)]
    for person, line in zip(people, lines[1:], strict=True):
        own = overrides.get(str(person.name), {})
        rows.append(line + "," + ",".join(str(own.get(c, "")) for c in columns))
    path = tmp_path / "roster.csv"
    path.write_text("\n".join(rows) + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def people() -> list[Person]:
    return new_roster(3, teachers=1)  # student01..03, teacher01


@pytest.fixture
def start(tmp_path: Path, people: list[Person],
          server_factory: Callable[..., BackgroundServer]) -> Callable[..., BackgroundServer]:
    """A roster server with one worker and a slow null engine, so jobs stay queued."""
    def make(overrides: dict[str, dict[str, Any]] | None = None, **config: Any) -> BackgroundServer:
        config.setdefault("engine_options", {"delay": 5.0})
        return server_factory(engine="null", workers=1, roster=str(write(tmp_path, people,
                                                                         overrides or {})),
                              **config)
    return make


def block(server: BackgroundServer, teacher: Person) -> dict[str, Any]:
    """A teacher's job holding the one worker: every later job waits."""
    r = post(server, teacher)
    assert r.status_code == 200, r.text
    eventually(lambda: server.service.stats["running"] == 1)
    return r.json()  # type: ignore[no-any-return]


def cancel(job: dict[str, Any], person: Person) -> None:
    assert httpx.put(job["cancel_url"], headers=key(person)).status_code == 202


# -- units: the ledger, the limits, the sizes ---------------------------------------------------


def test_ledger_charges_refunds_and_survives_a_snapshot() -> None:
    ledger = Ledger()
    ledger.charge("ada", megapixels=3.0)
    ledger.charge("ada", usd=0.25)
    ledger.refund("ada", megapixels=1.0)
    ledger.refund("bob", megapixels=5.0)  # never below zero
    assert ledger.used("ada") == (2.0, 0.25) and ledger.used("bob") == (0.0, 0.0)
    saved = ledger.snapshot()
    assert saved["ada"] == {"megapixels": 2.0, "usd": 0.25}
    again = Ledger()
    again.restore({**saved, "eve": {"megapixels": "nan", "usd": -1}, "odd": 3})  # type: ignore[dict-item]
    assert again.used("ada") == (2.0, 0.25) and again.used("eve") == (0.0, 0.0)
    assert "odd" not in again.snapshot()


def test_limits_come_from_the_roster_column_else_the_server_and_teachers_have_none() -> None:
    quota = Quota(ServerConfig(roster="r.csv", budget_mp=10.0))
    assert quota.limits(Person("a", "student")) == {"max_queued": 4, "budget_mp": 10.0,
                                                    "budget_usd": None}
    assert quota.limits(Person("b", "student", max_queued=1, budget_usd=2.0)) == {
        "max_queued": 1, "budget_mp": 10.0, "budget_usd": 2.0}
    assert quota.limits(Person("t", "teacher", max_queued=1)) == {
        "max_queued": None, "budget_mp": None, "budget_usd": None}
    assert Quota(ServerConfig()).limits(Person("x", "student"))["max_queued"] is None


def test_requested_size_from_image_size_the_input_or_an_estimate() -> None:
    import io

    assert requested_size({"image_size": "square_hd", "num_images": 3}, None) == (1024, 1024, 3)
    assert requested_size({"num_images": 2}, Image.new("RGB", (30, 20))) == (30, 20, 2)
    png = io.BytesIO()
    Image.new("RGB", (40, 10)).save(png, format="PNG")
    assert requested_size({}, png.getvalue()) == (40, 10, 1)
    assert requested_size({}, None) == (1000, 1000, 1)  # an http(s) input: 1 MP
    assert requested_size({}, b"not a picture") == (1000, 1000, 1)


def test_budget_usd_refuses_once_spent_and_a_job_whose_estimate_would_pass_it() -> None:
    quota = Quota(ServerConfig(roster="r.csv", budget_usd=0.10))
    ada = Person("ada", "student")
    quota.admit("j1", "ada", (1000, 1000, 2), person=ada, waiting=0)  # about $0.07
    with pytest.raises(QuotaExceeded) as info:  # $0.07 waiting + $0.07 > $0.10
        quota.admit("j2", "ada", (1000, 1000, 2), person=ada, waiting=1)
    assert info.value.limit == "budget_usd"
    assert info.value.headers == {"X-Fal-Error-Type": "budget_exhausted"}  # never retried
    assert "$0.07 more is waiting" in info.value.detail and "roster" in info.value.detail
    quota.finish("j1", ran=True, cost_usd=0.12)  # the gateway's real cost
    assert quota.ledger.used("ada")[1] == pytest.approx(0.12)
    with pytest.raises(QuotaExceeded, match=r"spent \$0.12 of \$0.10"):
        quota.admit("j3", "ada", (10, 10, 1), person=ada, waiting=0)
    quota.admit("j4", "teach", (1000, 1000, 4), person=Person("teach", "teacher"), waiting=0)


def test_only_a_job_that_never_reached_the_engine_is_refunded() -> None:
    quota = Quota(ServerConfig())
    for job in ("ran", "never"):
        quota.admit(job, "ada", (1000, 1000, 1), waiting=0)
    assert quota.ledger.used("ada")[0] == pytest.approx(2.0)
    quota.finish("ran", ran=True)
    quota.finish("never", ran=False)
    quota.finish("never", ran=False)  # twice: refunded once
    assert quota.ledger.used("ada")[0] == pytest.approx(1.0)


# -- over HTTP, through a real loopback server --------------------------------------------------


def test_the_fifth_waiting_job_is_a_429_naming_max_queued_with_retry_after(
        start: Callable[..., BackgroundServer], people: list[Person]) -> None:
    server = start()
    student, teacher = people[0], people[-1]
    block(server, teacher)
    jobs = [post(server, student) for _ in range(4)]
    assert [r.status_code for r in jobs] == [200] * 4
    for path in (SUBMIT, RUN_PREFIX + SUBMIT.lstrip("/")):  # the queue and the sync route
        refused = post(server, student, path)
        assert refused.status_code == 429, refused.text
        detail = refused.json()["detail"]
        assert list(refused.json()) == ["detail"] and isinstance(detail, str)  # fal's shape
        assert "max_queued" in detail and "4 of 4 jobs waiting" in detail and "s." in detail
        assert int(refused.headers["retry-after"]) >= 1
    assert post(server, people[1]).status_code == 200  # another student is not held up
    stats = server.service.stats["jobs"]
    assert stats["over_quota"] == 2 and stats["rejected"] == 2
    cancel(jobs[0].json(), student)  # a waiting job gone: room for one more
    assert post(server, student).status_code == 200
    assert post(server, student).status_code == 429


def test_a_roster_column_overrides_max_queued_and_teachers_are_exempt(
        start: Callable[..., BackgroundServer], people: list[Person]) -> None:
    server = start({"student02": {"max_queued": 1}, "teacher01": {"max_queued": 1}})
    teacher = people[-1]
    block(server, teacher)
    assert post(server, people[1]).status_code == 200
    refused = post(server, people[1])
    assert refused.status_code == 429 and "1 of 1 jobs waiting" in refused.json()["detail"]
    assert [post(server, teacher).status_code for _ in range(6)] == [200] * 6  # exempt
    usage = server.service.usage()
    assert usage["student02"]["max_queued"] == 1 and usage["student01"]["max_queued"] == 4
    assert usage["teacher01"]["queued"] == 6 and usage["teacher01"]["max_queued"] is None


def test_a_spent_budget_mp_is_a_429_without_retry_after_and_a_cancel_refunds(
        start: Callable[..., BackgroundServer], people: list[Person]) -> None:
    server = start({"student01": {"budget_mp": 0.01}})  # room for one 96x64 job
    student, teacher = people[0], people[-1]
    block(server, teacher)
    first = post(server, student)
    assert first.status_code == 200
    refused = post(server, student)
    assert refused.status_code == 429 and "retry-after" not in refused.headers
    assert refused.headers["x-fal-error-type"] == "budget_exhausted"
    detail = refused.json()["detail"]
    assert "budget_mp" in detail and f"{IMAGE_MP:.3g} of 0.01 megapixels" in detail
    assert "server session" in detail and "teacher" in detail and "roster" in detail
    assert server.service.usage()["student01"]["megapixels"] == pytest.approx(IMAGE_MP)
    cancel(first.json(), student)  # cancelled while queued: refunded
    assert server.service.usage()["student01"]["megapixels"] == 0
    assert post(server, student).status_code == 200
    assert post(server, people[1]).status_code == 200  # the server has no budget of its own


def test_the_global_queue_cap_is_a_429_for_teachers_too(
        start: Callable[..., BackgroundServer], people: list[Person]) -> None:
    server = start(max_queue=2)
    teacher = people[-1]
    block(server, teacher)
    assert [post(server, p).status_code for p in people[:2]] == [200, 200]
    for person in (people[2], teacher):
        refused = post(server, person)
        assert refused.status_code == 429, refused.text
        assert "max_queue: this server already has 2 of 2" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1


def test_queued_pixels_are_capped_on_the_whole_server(
        start: Callable[..., BackgroundServer], people: list[Person]) -> None:
    server = start(max_queued_pixels=10_000)  # one 96x64 job (6144 pixels) at a time
    assert post(server, people[0]).status_code == 200
    refused = post(server, people[-1])
    assert refused.status_code == 429 and "max_queued_pixels" in refused.json()["detail"]


def test_usage_lists_every_roster_person_with_their_limits(
        start: Callable[..., BackgroundServer], people: list[Person]) -> None:
    server = start({"student03": {"budget_usd": 1.5}}, budget_mp=5.0,
                   engine_options={"delay": 0.0})
    r = post(server, people[0])
    eventually(lambda: server.service.usage()["student01"]["completed"] == 1)
    usage = server.service.usage()
    assert sorted(usage) == ["student01", "student02", "student03", "teacher01"]
    assert usage["student01"] == {"queued": 0, "running": 0, "completed": 1, "failed": 0,
                                  "megapixels": pytest.approx(IMAGE_MP), "usd": 0.0,
                                  "max_queued": 4, "budget_mp": 5.0, "budget_usd": None}
    assert usage["student03"]["budget_usd"] == 1.5 and usage["student02"]["completed"] == 0
    assert usage["teacher01"]["budget_mp"] is None
    assert r.status_code == 200


def test_the_fluxnb_client_shows_the_servers_text_and_waits_as_retry_after_says(
        start: Callable[..., BackgroundServer], people: list[Person]) -> None:
    from fluxnb.client import QueueClient
    from fluxnb.errors import QueueHTTPError

    server = start({"student01": {"max_queued": 1}, "student02": {"budget_mp": 0.001}})
    block(server, people[-1])
    assert post(server, people[0]).status_code == 200
    for person, limit, retry_after in ((people[0], "max_queued", True),
                                       (people[1], "budget_mp", False)):
        with QueueClient(server.base_url, key=person.token, max_retries=2) as client:
            sleeps: list[float] = []
            client._sleep = sleeps.append  # record the waits instead of waiting
            with pytest.raises(QueueHTTPError) as info:
                client.submit(**body())
        assert info.value.status_code == 429 and limit in str(info.value)
        # bounded retries, never a tight loop; a spent budget (budget_exhausted) is not retried
        assert len(sleeps) == (2 if retry_after else 0)
        if retry_after:
            assert all(s >= 1.0 for s in sleeps)  # Retry-After is honoured
