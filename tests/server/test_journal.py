"""Durable state (issue 11, item 8) without HTTP: queued inputs kept compressed, the SQLite
journal, the durable result store, restart recovery in one process, and keeping results by age
and by size."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from fluxnb.datauri import encode_data_uri
from fluxnb.protocol import COMPLETED, IN_PROGRESS, IN_QUEUE
from fluxnb.server.config import ServerConfig
from fluxnb.server.durable import RERUN_LINE, DurableResultStore, default_state_dir, recover
from fluxnb.server.engines import Engine, EngineOutput, EngineRequest, JobContext
from fluxnb.server.inputs import ImageLimits
from fluxnb.server.journal import JOURNAL_FILE, Journal
from fluxnb.server.record import JobRecord
from fluxnb.server.service import JobService
from fluxnb.server.store import InMemoryResultStore
from fluxnb.server.validate import check_body

from ..conftest import make_test_image, make_test_mask
from ..support import eventually

APP = "fal-ai/flux-lora/inpainting"


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def body(**extra: object) -> bytes:
    fields = {"prompt": "a cat", "output_format": "png",
              "image_url": encode_data_uri(png(make_test_image(64, 48)), "image/png"),
              "mask_url": encode_data_uri(png(make_test_mask(64, 48)), "image/png"), **extra}
    return json.dumps(fields).encode()


class Gate(Engine):
    """Echoes the input image once ``release`` is set (jobs wait while it is not)."""

    name = "gate"

    def __init__(self) -> None:
        self.release = threading.Event()

    def run(self, request: EngineRequest, ctx: JobContext) -> EngineOutput:
        while not self.release.wait(0.01):
            ctx.check_cancelled()
        return EngineOutput(images=[request.image.copy()])


def service(tmp_path: Path | None, engine: Engine | None = None, **options: object) -> JobService:
    config = ServerConfig(engine="null", state_dir=None if tmp_path is None else str(tmp_path),
                          **options)  # type: ignore[arg-type]
    return JobService(config, engine)


def submit(svc: JobService, owner: str = "ada", **extra: object) -> JobRecord:
    params, image, mask, ignored = check_body(body(**extra), ImageLimits(), 10**8)
    return svc.submit(APP, params, image=image, mask=mask, ignored=ignored, owner=owner)


@pytest.fixture
def gate() -> Iterator[Gate]:
    engine = Gate()
    yield engine
    engine.release.set()


# -- compressed queued inputs -------------------------------------------------------------------

def test_a_queued_job_holds_encoded_bytes_and_results_match_the_input(gate: Gate) -> None:
    svc = service(None, gate)
    svc.start()
    try:
        first, queued = submit(svc), submit(svc)
        eventually(lambda: first.state == IN_PROGRESS)
        assert queued.state == IN_QUEUE
        assert isinstance(queued.image_data, bytes) and isinstance(queued.mask_data, bytes)
        assert queued.image_data == png(make_test_image(64, 48))  # the data URI's payload
        assert not any(isinstance(v, Image.Image) for v in vars(queued).values())
        assert queued.params["image_url"].endswith("chars)")  # the elided note stays
        gate.release.set()
        eventually(lambda: queued.state == COMPLETED)
        assert queued.error is None and queued.image_data is None
        name = queued.result["images"][0]["file_name"]  # type: ignore[index]
        path, _mime = svc.file(queued.files_token or "", name) or (Path("/nonexistent"), "")
        with Image.open(path) as out:
            assert out.convert("RGB").tobytes() == make_test_image(64, 48).tobytes()
    finally:
        svc.stop()


# -- the journal ----------------------------------------------------------------------------------

def test_journal_round_trip_keeps_every_field(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    job = JobRecord(id="j1", app=APP, params={"prompt": "p"}, owner="ada", priority=1, seq=7,
                    image_data=b"img", mask_data=b"msk", deadline=None)
    job.deadline = job.submitted_at + 30.0
    journal.save(job)
    done = JobRecord(id="j2", app=APP, params={}, owner="bob", seq=8, state=COMPLETED,
                     result={"images": []}, files_token="tok", cost_usd=0.03, inference_time=1.5)
    done.error, done.error_type, done.error_status = None, None, None
    journal.save(done)
    journal.save_usage({"ada": {"megapixels": 2.5, "usd": 0.0}, "bob": {"megapixels": 1.0,
                                                                         "usd": 0.03}})
    journal.close()
    again = Journal(tmp_path)
    again.open()
    try:
        j1, j2 = again.load_jobs()
        assert (j1.id, j1.owner, j1.priority, j1.seq, j1.image_data, j1.mask_data, j1.state) == \
            ("j1", "ada", 1, 7, b"img", b"msk", IN_QUEUE)
        assert j1.deadline is not None and j1.deadline - j1.submitted_at == pytest.approx(30.0)
        assert (j2.result, j2.files_token, j2.cost_usd, j2.inference_time, j2.image_data) == \
            ({"images": []}, "tok", 0.03, 1.5, None)
        assert again.load_usage()["bob"] == {"megapixels": 1.0, "usd": 0.03}
        again.forget(["j1"])
        assert [j.id for j in again.load_jobs()] == ["j2"]
    finally:
        again.close()
    with sqlite3.connect(tmp_path / JOURNAL_FILE) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_recover_reruns_a_running_job_once_then_fails_it_cleanly() -> None:
    job = JobRecord(id="r", app=APP, params={}, state=IN_PROGRESS, image_data=b"x")
    recover([job])
    assert (job.state, job.restarts, job.logs[-1].message) == (IN_QUEUE, 1, RERUN_LINE)
    job.state = IN_PROGRESS
    recover([job])
    assert (job.state, job.error_type, job.image_data) == (COMPLETED, "server_restarted", None)
    assert "restarted" in (job.error or "") and job.error_body == {
        "detail": job.error, "error_type": "server_restarted"}


def test_default_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    roster = tmp_path / "roster.csv"
    assert default_state_dir(ServerConfig()) is None  # the laptop server: in memory
    assert default_state_dir(ServerConfig(state_dir=str(tmp_path / "s"))) == tmp_path / "s"
    one = default_state_dir(ServerConfig(roster=str(roster), port=8000))
    two = default_state_dir(ServerConfig(roster=str(roster), port=8001))
    assert one is not None and one.parent == tmp_path / "data" / "fluxnb" / "servers"
    assert one != two
    assert isinstance(JobService(ServerConfig(engine="null")).store, InMemoryResultStore)
    svc = JobService(ServerConfig(engine="null", roster=str(roster)))
    assert isinstance(svc.store, DurableResultStore) and svc.journal is not None


# -- restart in one process ---------------------------------------------------------------------

def test_a_restart_requeues_reruns_and_keeps_results(tmp_path: Path, gate: Gate) -> None:
    first = service(tmp_path, Gate(), workers=1)
    first.engine.release.set()  # type: ignore[attr-defined]
    first.start()
    done = submit(first, "ada")
    eventually(lambda: done.state == COMPLETED)
    first.engine.release.clear()  # type: ignore[attr-defined]
    running = submit(first, "ada")
    eventually(lambda: running.state == IN_PROGRESS)
    queued = [submit(first, owner) for owner in ("bob", "ada", "bob")]
    first.journal.flush()  # type: ignore[union-attr]
    # a crash: the threads stop without any job settling (no stop(), no cancel)
    first._stopping = True
    first.journal.close()  # type: ignore[union-attr]
    usage = first.quota.ledger.snapshot()

    second = service(tmp_path, gate, workers=1)
    second.start()
    try:
        again = second.get(running.id)
        assert again is not None and again.state in (IN_QUEUE, IN_PROGRESS)
        assert [m.message for m in again.logs].count(RERUN_LINE) == 1
        assert [second.get(j.id).owner for j in queued] == ["bob", "ada", "bob"]  # type: ignore[union-attr]
        assert second.quota.ledger.snapshot() == usage
        old = second.get(done.id)
        assert old is not None and old.result == done.result and old.owner == "ada"
        name = done.result["images"][0]["file_name"]  # type: ignore[index]
        assert second.file(done.files_token or "", name) is not None
        gate.release.set()
        for job_id in [running.id, *(j.id for j in queued)]:
            eventually(lambda job_id=job_id: second.get(job_id).state == COMPLETED)  # type: ignore[union-attr, misc]
            assert second.get(job_id).error is None  # type: ignore[union-attr]
    finally:
        second.stop()
        first.stop(timeout=1.0)


# -- keeping results ------------------------------------------------------------------------------

def _output(store: InMemoryResultStore, job_id: str) -> str | None:
    request = EngineRequest(image=make_test_image(16, 16), mask=make_test_mask(16, 16),
                            params={"prompt": "p", "output_format": "png"}, seed=1)
    return store.save(job_id, EngineOutput(images=[make_test_image(16, 16)]), request,
                      0.1).files_token


@pytest.mark.parametrize("durable", [False, True])
def test_results_go_by_age_and_by_total_size(tmp_path: Path, durable: bool) -> None:
    journal = Journal(tmp_path)
    if durable:
        journal.open()
        store: InMemoryResultStore = DurableResultStore(journal, keep_results=60.0, max_bytes=10**9)
    else:
        store = InMemoryResultStore(keep_results=60.0, max_bytes=10**9)
    store.open()
    tokens = {job_id: _output(store, job_id) for job_id in ("a", "b", "c")}
    for job_id, token in tokens.items():
        assert store.keep(job_id, token) == []
    assert store.expire(time.time() + 30) == []
    assert store.expire(time.time() + 61) == ["a", "b", "c"]
    assert len(store) == 0 and store.file(tokens["a"] or "", "a-0.png") is None
    store.max_bytes = 1  # now every new result is over the cap: the older ones go first
    store.keep("d", _output(store, "d"))
    token_e = _output(store, "e")
    assert store.keep("e", token_e) == ["d"]
    store.close()
    if durable:
        assert [r[0] for r in journal.load_results()] == ["e"]
        journal.close()
        assert [p.name for p in (tmp_path / "results").iterdir()] == [token_e]


def test_the_service_forgets_expired_jobs_and_leaves_no_temp_folder(gate: Gate) -> None:
    svc = service(None, gate, keep_results=1.0)
    gate.release.set()
    svc.start()
    folder = svc.store._dir  # type: ignore[attr-defined]
    try:
        job = submit(svc)
        eventually(lambda: job.state == COMPLETED)
        assert svc.get(job.id) is job
        eventually(lambda: svc.get(job.id) is None, timeout=10.0)  # evicted by age
    finally:
        svc.stop()
    assert folder is not None and not Path(folder).exists()


# -- a submit is on disk before its answer; the state is private (engineer 11a) -----------------

def test_a_submit_is_on_disk_before_the_client_gets_its_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from fluxnb.server.app import create_app

    write = Journal._write

    def slow_disk(self: Journal, batch: dict[tuple[str, str], object]) -> None:
        time.sleep(0.3)  # each commit takes a while: the writer is far behind the answer
        write(self, batch)

    monkeypatch.setattr(Journal, "_write", slow_disk)
    app = create_app(ServerConfig(engine="null", state_dir=str(tmp_path)))
    headers = {"host": "127.0.0.1:8000", "content-type": "application/json"}
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        for _ in range(2):
            answer = client.post(f"/{APP}", content=body(), headers=headers)
            assert answer.status_code == 200, answer.text
            request_id = answer.json()["request_id"]
            # what a kill -9 now would leave: the committed rows, read by another connection
            db = sqlite3.connect(tmp_path / JOURNAL_FILE)
            try:
                rows = db.execute("SELECT id FROM jobs WHERE id = ?", (request_id,)).fetchall()
            finally:
                db.close()
            assert rows == [(request_id,)], f"job {request_id} answered 200 but is not on disk"


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_state_dir_is_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    svc = service(state)
    svc.start()
    try:
        job = submit(svc)
        eventually(lambda: job.state == COMPLETED)
        assert job.error is None and job.files_token is not None
        svc.wait_saved()
        assert _mode(state) == 0o700 and _mode(state / "results") == 0o700
        assert _mode(state / "results" / job.files_token) == 0o700
        files = [p for p in state.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {JOURNAL_FILE, f"{JOURNAL_FILE}-wal",
                                           f"{job.id}-0.png"}
        assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        svc.stop()


def test_an_older_world_readable_state_dir_is_made_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    journal = Journal(state)
    journal.open()
    journal.close()
    state.chmod(0o755)
    (state / JOURNAL_FILE).chmod(0o644)
    journal = Journal(state)
    journal.open()
    try:
        assert _mode(state) == 0o700 and _mode(state / JOURNAL_FILE) == 0o600
    finally:
        journal.close()
