"""The fal gateway (issue 11, item 7): ``--engine fal`` forwards each job to a fal-compatible
queue with the server's own key, relays queue position, logs and cancel, serves the outputs from
the class server, records the cost, and never shows the key.

Two real loopback servers: an upstream ``fluxnb serve --key SECRET --engine null`` plays fal.ai,
and a class server with a roster runs ``engine="fal"`` against it.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb.errors import JobCancelledError, JobFailedError
from fluxnb.schema import PRICE_PER_MEGAPIXEL
from fluxnb.server import BackgroundServer
from fluxnb.server.auth import Person, new_roster, write_roster
from fluxnb.server.engines import create_engine

from ..conftest import make_test_image, make_test_mask
from ..support import ServeProcess, eventually
from .test_server_contract import SUBMIT, body

SECRET = "fal-upstream-" + os.urandom(8).hex()
Factory = Callable[..., BackgroundServer]


@pytest.fixture
def people(tmp_path: Path) -> tuple[Path, Person, Person]:
    roster = new_roster(1, teachers=1)
    return write_roster(tmp_path / "roster.csv", roster), roster[0], roster[1]


def upstream_server(server_factory: Factory, delay: float = 0.0, **extra: Any) -> BackgroundServer:
    return server_factory(engine="null", key=SECRET, workers=1,
                          engine_options={"delay": delay}, **extra)


def class_server(server_factory: Factory, upstream: BackgroundServer, roster: Path,
                 fal_key: str = SECRET) -> BackgroundServer:
    return server_factory(engine="fal", roster=str(roster), workers=2, upstream=upstream.base_url,
                          fal_key=fal_key, engine_options={"poll_interval": 0.05})


def upstream_jobs(upstream: BackgroundServer) -> list[Any]:
    return upstream.service.jobs()


def job_logs(server: BackgroundServer) -> list[str]:
    return [e.message for j in server.service.jobs() for e in j.logs]


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


# -- the round trip ----------------------------------------------------------------------------


def test_student_job_runs_upstream_and_is_served_by_the_class_server(
        server_factory: Factory, people: tuple[Path, Person, Person]) -> None:
    roster, student, _ = people
    upstream = upstream_server(server_factory)
    school = class_server(server_factory, upstream, roster)
    image, mask = make_test_image(96, 64), make_test_mask(96, 64)
    with fluxnb.connect(school.base_url, key=student.token) as client:
        result = client.run(prompt="a red fox", image_url=image, mask_url=mask,
                            output_format="png", num_images=2, seed=7, logs=True)
        got = result.pil_images()
    urls = [img.url for img in result.images]
    assert all(u.startswith(school.base_url + "/_fluxnb/files/") for u in urls), urls
    assert not any(upstream.base_url in u for u in urls)
    # the upstream (null engine) echoed the input; the class server serves the same pixels
    [up] = upstream_jobs(upstream)
    assert up.params["seed"] == 7 and up.params["sync_mode"] is False
    up_urls = [i["url"] for i in up.result["images"]]
    headers = {"Authorization": f"Key {SECRET}"}
    theirs = [Image.open(io.BytesIO(httpx.get(upstream.base_url + u if u.startswith("/") else u,
                                              headers=headers).content)) for u in up_urls]
    assert len(got) == len(theirs) == 2
    for mine, their in zip(got, theirs, strict=True):
        assert np.array_equal(pixels(mine), pixels(their))
        assert np.array_equal(pixels(mine), pixels(image))
    # upstream log lines are relayed into the student's logs
    lines = [e.message for e in result.logs or []]
    assert "upstream: submitted" in lines
    assert any(line.startswith("upstream: ") and "step 10/10" in line for line in lines), lines
    # the cost: output megapixels x images at the published price, on the job record
    [job] = school.service.jobs()
    assert job.cost_usd == pytest.approx(96 * 64 / 1e6 * 2 * PRICE_PER_MEGAPIXEL)
    assert job.cost_usd > 0


def test_upstream_queue_position_is_relayed(
        server_factory: Factory, people: tuple[Path, Person, Person]) -> None:
    roster, student, _ = people
    upstream = upstream_server(server_factory, delay=1.0)
    school = class_server(server_factory, upstream, roster)
    # another customer of "fal.ai" holds the upstream's only worker
    blocker = httpx.post(upstream.base_url + SUBMIT, json=body(num_images=4),
                         headers={"Authorization": f"Key {SECRET}"}).json()
    eventually(lambda: upstream.service.stats["running"] == 1)
    with fluxnb.connect(school.base_url, key=student.token) as client:
        job = client.submit(prompt="a red fox", image_url=make_test_image(),
                            mask_url=make_test_mask())
        eventually(lambda: any("upstream: queue position 0" in m for m in job_logs(school)),
                   message=lambda: str(job_logs(school)))
        status = job.status(logs=True)
        # the student sees it through status?logs=1 (the class server's job is IN_PROGRESS)
        assert "upstream: queue position 0" in [e.message for e in status.logs or []]
        httpx.put(blocker["cancel_url"], headers={"Authorization": f"Key {SECRET}"})
        result = job.wait(timeout=30)
    assert result.images


def test_a_students_cancel_reaches_upstream(
        server_factory: Factory, people: tuple[Path, Person, Person]) -> None:
    roster, student, _ = people
    upstream = upstream_server(server_factory, delay=2.0)
    school = class_server(server_factory, upstream, roster)
    with fluxnb.connect(school.base_url, key=student.token) as client:
        job = client.submit(prompt="a red fox", image_url=make_test_image(),
                            mask_url=make_test_mask(), num_images=4)
        eventually(lambda: any("upstream: image 1/4: step" in m for m in job_logs(school)), 20,
                   message=lambda: str(job_logs(school)))
        assert job.cancel() == "CANCELLATION_REQUESTED"
        with pytest.raises(JobCancelledError):
            job.wait(timeout=30)
    eventually(lambda: upstream.service.stats["jobs"]["cancelled"] == 1,
               message=lambda: str(upstream.service.stats))
    assert any("upstream: cancel" in m for m in job_logs(school))
    [up] = upstream_jobs(upstream)
    assert up.error_type == "request_cancelled"


def test_an_upstream_422_names_the_field(
        server_factory: Factory, people: tuple[Path, Person, Person]) -> None:
    roster, student, _ = people
    upstream = upstream_server(server_factory, max_image_pixels=100)  # refuses our 96x64 input
    school = class_server(server_factory, upstream, roster)
    with fluxnb.connect(school.base_url, key=student.token) as client, \
            pytest.raises(JobFailedError) as caught:
        client.run(prompt="a red fox", image_url=make_test_image(), mask_url=make_test_mask())
    assert caught.value.status_code == 422
    assert [e["loc"] for e in caught.value.error] == [["body", "image_url"]]
    assert SECRET not in str(caught.value) and upstream.base_url not in str(caught.value)


# -- the key never shows -----------------------------------------------------------------------


def _all_text(response: httpx.Response) -> str:
    return response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())


def test_the_key_never_shows_anywhere(server_factory: Factory, people: tuple[Path, Person, Person],
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    roster, student, teacher = people
    upstream = upstream_server(server_factory)
    school = class_server(server_factory, upstream, roster)
    seen: list[str] = []
    mine = {"Authorization": f"Key {student.token}"}
    submit = httpx.post(school.base_url + SUBMIT, json=body(output_format="png"), headers=mine)
    seen.append(_all_text(submit))
    job = submit.json()
    eventually(lambda: httpx.get(job["status_url"], headers=mine).json()["status"] == "COMPLETED")
    for url in (job["status_url"] + "?logs=1", job["status_url"] + "/stream?logs=1",
                job["response_url"]):
        seen.append(_all_text(httpx.get(url, headers=mine)))
    result = httpx.get(job["response_url"], headers=mine).json()
    for image in result["images"]:
        assert image["url"].startswith(school.base_url + "/_fluxnb/files/")
        seen.append(_all_text(httpx.get(image["url"], headers=mine)))
    boss = {"Authorization": f"Key {teacher.token}"}
    info = httpx.get(school.base_url + "/_fluxnb/info", headers=boss)
    assert info.json()["engine"]["upstream"] == f"127.0.0.1:{upstream.port}"
    for path in ("/_fluxnb/info", "/_fluxnb/stats", "/_fluxnb/dashboard", "/_fluxnb/gallery"):
        seen.append(_all_text(httpx.get(school.base_url + path, headers=boss)))
        seen.append(_all_text(httpx.get(school.base_url + path, headers=mine)))
    seen.append(repr(school.service.engine) + repr(school.config))
    seen.append(caplog.text)
    assert "upstream: step 10/10" in "".join(seen)  # the logs were really looked at
    for text in seen:
        assert SECRET not in text


def test_a_bad_upstream_key_is_a_short_message_without_the_key(
        server_factory: Factory, people: tuple[Path, Person, Person],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    roster, student, _ = people
    upstream = upstream_server(server_factory)
    wrong = "fal-wrong-" + os.urandom(8).hex()
    school = class_server(server_factory, upstream, roster, fal_key=wrong)
    with fluxnb.connect(school.base_url, key=student.token) as client, \
            pytest.raises(JobFailedError) as caught:
        client.run(prompt="a red fox", image_url=make_test_image(), mask_url=make_test_mask())
    message = str(caught.value)
    assert "ref " in message and len(message) < 300, message
    [job] = school.service.jobs()
    shown = [message, str(job.error_body), *(e.message for e in job.logs)]
    assert "upstream submit: HTTP 401" in caplog.text  # the operator's log says what happened
    for text in shown:
        assert upstream.base_url not in text and f"127.0.0.1:{upstream.port}" not in text
    for text in [*shown, caplog.text]:
        assert wrong not in text and SECRET not in text


def test_engine_repr_info_and_refusals() -> None:
    engine = create_engine("fal", key=SECRET, upstream="http://127.0.0.1:9/")
    assert SECRET not in repr(engine) and SECRET not in str(engine.info())
    assert engine.generative and engine.max_concurrency is None
    assert create_engine("fal", key=SECRET).info()["upstream"] == "queue.fal.run"
    with pytest.raises(ValueError, match="FAL_KEY"):
        create_engine("fal", key=None, upstream="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="user:password") as caught:
        create_engine("fal", key=SECRET, upstream="http://u:pw@127.0.0.1:9")
    assert "pw" not in str(caught.value)


# -- the command line --------------------------------------------------------------------------


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("FAL_KEY", "FAL_KEY_ID",
                                                              "FAL_KEY_SECRET")}
    return subprocess.run([sys.executable, "-m", "fluxnb", "serve", "--port", "0", *args],
                          capture_output=True, text=True, timeout=60, env={**base, **(env or {})})


def test_cli_engine_fal_needs_a_key_and_upstream_needs_engine_fal() -> None:
    done = _serve("--engine", "fal")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "FAL_KEY" in lines[0] and "--fal-key-file" in lines[0], done.stderr
    done = _serve("--engine", "null", "--upstream", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--engine fal" in done.stderr


def test_cli_serve_engine_fal_with_a_key_file(tmp_path: Path,
                                              people: tuple[Path, Person, Person],
                                              server_factory: Factory) -> None:
    roster, student, teacher = people
    upstream = upstream_server(server_factory)
    key_file = tmp_path / "fal.key"
    key_file.write_text(SECRET + "\n")
    log = tmp_path / "serve.log"
    with ServeProcess(["--engine", "fal", "--fal-key-file", str(key_file), "--upstream",
                       upstream.base_url, "--roster", str(roster)], token=teacher.token,
                      log=log) as proc:
        info = httpx.get(proc.base_url + "/_fluxnb/info", headers=proc.headers).json()
        assert info["engine"]["name"] == "fal"
        with fluxnb.connect(proc.base_url, key=student.token) as client:
            result = client.run(prompt="a red fox", image_url=make_test_image(),
                                mask_url=make_test_mask())
        assert result.images[0].url.startswith(proc.base_url)
    assert SECRET not in log.read_text() and SECRET not in str(info)
