"""A 429 that waiting cannot cure is not retried: a class server's spent budget
(``X-Fal-Error-Type: budget_exhausted``, no ``Retry-After``) is raised at once, with the server's
text; every other 429 is still retried as before."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fluxnb.client import QueueClient
from fluxnb.errors import QueueHTTPError
from fluxnb.protocol import BUDGET_EXHAUSTED, Queued
from fluxnb.server import BackgroundServer
from fluxnb.server.auth import new_roster, write_roster

from ..server.test_server_contract import body
from ..twins import call, close
from .test_client_mock import INPUT, STATUS, SUBMIT, Fake, envelope, make

SPENT = ("budget_mp: student01 has used 0.00614 of 0.01 megapixels for this server session; "
         "ask your teacher to raise budget_mp in the roster.")


@pytest.mark.anyio
async def test_a_spent_budget_is_raised_at_once_with_the_servers_text(flavor: str) -> None:
    fake = Fake()
    fake.set("POST", SUBMIT, httpx.Response(429, headers={"X-Fal-Error-Type": BUDGET_EXHAUSTED},
                                            json={"detail": SPENT}))
    client = make(flavor, fake)
    with pytest.raises(QueueHTTPError) as info:
        await call(client.submit, INPUT)
    await close(client)
    assert fake.count() == 1 and client.sleeps == []  # type: ignore[union-attr]
    err = info.value
    assert (err.status_code, err.error_type, err.detail) == (429, BUDGET_EXHAUSTED, SPENT)
    assert "ask your teacher" in str(err)


@pytest.mark.anyio
@pytest.mark.parametrize("headers", [{}, {"X-Fal-Error-Type": "rate_limited"}])
async def test_any_other_429_is_still_retried(flavor: str, headers: dict[str, str]) -> None:
    fake = Fake()
    fake.set("GET", STATUS, httpx.Response(429, headers=headers, json={"detail": "slow down"}),
             httpx.Response(202, json=envelope(queue_position=1)))
    client = make(flavor, fake)
    status = await call(client.status, client.job("req-123"))
    await close(client)
    assert status == Queued(position=1)
    assert fake.count("GET", STATUS) == 2 and len(client.sleeps) == 1  # type: ignore[union-attr]


def test_through_a_real_class_server_the_second_job_over_budget_is_one_request(
        tmp_path: Path, server_factory: Callable[..., BackgroundServer]) -> None:
    people = new_roster(2, teachers=1)
    roster = write_roster(tmp_path / "roster.csv", people)
    # room for one 96x64 image (0.006 MP); the second job would pass the budget
    server = server_factory(engine="null", roster=str(roster), budget_mp=0.01)
    student = people[0]
    with QueueClient(server.base_url, key=student.token) as client:
        client.submit(body())
        with pytest.raises(QueueHTTPError) as info:
            client.submit(body())
    err = info.value
    assert err.status_code == 429 and err.error_type == BUDGET_EXHAUSTED
    assert isinstance(err.detail, str) and "budget_mp" in err.detail
    assert "0.01 megapixels" in err.detail and "roster" in err.detail
    assert server.service.stats["jobs"]["over_quota"] == 1  # one refusal: the client did not retry
