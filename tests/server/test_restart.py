"""A queue that survives ``kill -9`` (issue 11, item 8): a real ``fluxnb serve`` with a roster and
``--state-dir``, 5 finished + 2 running + 10 queued jobs, killed and started again."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from fluxnb.datauri import encode_data_uri
from fluxnb.server.auth import new_roster, write_roster
from fluxnb.server.durable import RERUN_LINE
from fluxnb.server.journal import JOURNAL_FILE

from ..conftest import make_test_image, make_test_mask
from ..support import ServeProcess, eventually, free_port

APP = "fal-ai/flux-lora/inpainting"
REQUESTS = "fal-ai/flux-lora/requests"  # fal's request routes name the app without its path


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


BODY = {"prompt": "a cat", "output_format": "png",
        "image_url": encode_data_uri(_png(make_test_image(64, 48)), "image/png"),
        "mask_url": encode_data_uri(_png(make_test_mask(64, 48)), "image/png")}


def _journal(state: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{state / JOURNAL_FILE}?mode=ro", uri=True, timeout=5)
    try:
        return list(db.execute(sql))
    finally:
        db.close()


class Class:
    """One server process at a time on a fixed port, state dir and roster."""

    def __init__(self, tmp_path: Path):
        people = new_roster(2, teachers=1)
        self.roster = write_roster(tmp_path / "roster.csv", people)
        self.ada, self.bob = (p for p in people if p.role == "student")
        self.teacher = next(p for p in people if p.role == "teacher")
        self.state = tmp_path / "state"
        self.port = free_port()
        self.tmp = tmp_path

    def serve(self, delay: float, n: int) -> ServeProcess:
        return ServeProcess(
            ["--engine", "null", "--engine-option", f"delay={delay}", "--workers", "2",
             "--roster", str(self.roster), "--state-dir", str(self.state), "--max-queued", "20"],
            port=self.port, token=self.teacher.token, log=self.tmp / f"serve-{n}.log")

    def client(self, who: Any) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10,
                            headers={"Authorization": f"Key {who.token}"})


def _status(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/{REQUESTS}/{job_id}/status", params={"logs": 1})
    assert response.status_code in (200, 202), response.text
    return dict(response.json())


def _done(client: httpx.Client, job_id: str) -> bool:
    return _status(client, job_id)["status"] == "COMPLETED"


def _fetch(client: httpx.Client, job_id: str) -> tuple[dict[str, Any], list[bytes]]:
    response = client.get(f"/{REQUESTS}/{job_id}")
    assert response.status_code == 200, response.text
    result = response.json()
    files = []
    for image in result["images"]:
        got = client.get(image["url"])
        assert got.status_code == 200
        files.append(got.content)
    return result, files


@pytest.mark.timeout(180)
def test_kill_9_with_finished_running_and_queued_jobs_loses_nothing(tmp_path: Path) -> None:
    room = Class(tmp_path)
    # 1. five jobs finish (a quick engine), then the server stops normally
    with room.serve(0.05, 1), room.client(room.ada) as ada:
        finished = [ada.post(f"/{APP}", json=BODY).json()["request_id"] for _ in range(5)]
        for job_id in finished:
            eventually(lambda job_id=job_id: _done(ada, job_id), 30)
        before = {job_id: _fetch(ada, job_id) for job_id in finished}
    # 2. a slow engine: two jobs run, ten wait; then kill -9
    server = room.serve(60.0, 2).wait_ready()
    try:
        with room.client(room.ada) as ada:
            later = [ada.post(f"/{APP}", json=BODY).json()["request_id"] for _ in range(12)]
            eventually(lambda: sum(_status(ada, j)["status"] == "IN_PROGRESS" for j in later) == 2,
                       30)
        # the journal's writer has caught up: 17 jobs, 2 of them running, before the kill
        eventually(lambda: _journal(room.state, "SELECT state, count(*) FROM jobs GROUP BY state"
                                    " ORDER BY state") ==
                   [("COMPLETED", 5), ("IN_PROGRESS", 2), ("IN_QUEUE", 10)], 10)
        usage = _journal(room.state, "SELECT owner, megapixels, usd FROM usage ORDER BY owner")
        assert usage and usage[0][1] > 0
        server.proc.kill()  # SIGKILL: no shutdown code runs
        server.proc.wait(10)
    finally:
        server.stop()
    running = [row[0] for row in _journal(room.state,
                                          "SELECT id FROM jobs WHERE state = 'IN_PROGRESS'")]
    assert len(running) == 2
    # 3. the same --state-dir again, a quick engine: every job ends right
    with room.serve(0.05, 3), room.client(room.ada) as ada, room.client(room.bob) as bob:
        for job_id in finished:  # still fetchable, bodies and files identical
            assert _fetch(ada, job_id) == before[job_id]
        for job_id in [*finished, *later]:  # isolation holds after the restart
            assert bob.get(f"/{REQUESTS}/{job_id}/status").status_code == 404
            assert bob.get(f"/{REQUESTS}/{job_id}").status_code == 404
        for job_id in later:
            eventually(lambda job_id=job_id: _done(ada, job_id), 30)
            status = _status(ada, job_id)
            if job_id in running:  # run again once (or failed with a clear error_type)
                assert status.get("error_type") in (None, "server_restarted")
                assert RERUN_LINE in [e["message"] for e in status["logs"]]
            else:
                assert status.get("error") is None, status
            if status.get("error") is None:
                result, files = _fetch(ada, job_id)
                assert len(files) == 1 and files[0][:8] == b"\x89PNG\r\n\x1a\n"
        assert sum(_status(ada, j)["status"] == "COMPLETED" for j in [*finished, *later]) == 17
    # usage was restored, not reset: the 17 jobs' charges are all still there
    assert _journal(room.state, "SELECT owner, megapixels, usd FROM usage ORDER BY owner") == usage
