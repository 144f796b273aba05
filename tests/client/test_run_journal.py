"""The run journal (issue 13, item 7): what ``client.run`` records, ``fluxnb.journal()``'s filters,
``.rerun(i)``, what turns it off, a journal that cannot be written, two writers at once, and
``fluxnb run`` recording a row."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sqlite3
import stat
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

import fluxnb
from fluxnb.client import AsyncQueueClient, QueueClient
from fluxnb.client import journal as journal_module
from fluxnb.client.journal import journal_path, read_rows, recording
from fluxnb.errors import JobTimeoutError
from fluxnb.history_journal import RerunError
from fluxnb.server import BackgroundServer
from tests.conftest import make_test_image, make_test_mask

MARKER_FAL = "falmarker0123:journalsecret9876"
MARKER_LOCAL = "localmarker-journal-5555"


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "_warned", set())


def _inputs(folder: Path) -> tuple[Path, Path]:
    image, mask = folder / "in.png", folder / "mask.png"
    make_test_image(80, 48).save(image)
    make_test_mask(80, 48).save(mask)
    return image, mask


def _client(server: BackgroundServer, **kw: object) -> QueueClient:
    return QueueClient(server.base_url, poll_interval=0.05, **kw)  # type: ignore[arg-type]


def _host(server: BackgroundServer) -> str:
    return server.base_url.split("//", 1)[1]


def test_a_run_records_every_field_and_the_inputs_by_path_and_sha256(
        live_server: BackgroundServer, tmp_path: Path) -> None:
    image, mask = _inputs(tmp_path)
    with _client(live_server, journal=True) as client:
        result = client.run(prompt="a red Fox", image_url=str(image), mask_url=mask, steps=6,
                            guidance_scale=4.0)
    frame = fluxnb.journal()
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["origin"] == "run" and row["status"] == "completed" and row["error"] is None
    assert row["backend"] == _host(live_server) and row["app"] == client.app
    assert row["request_id"] == result.request_id and row["seed"] == result.seed
    assert row["prompt"] == "a red Fox"
    params = row["params"]
    assert params["num_inference_steps"] == 6 and params["guidance_scale"] == 4.0
    assert params["seed"] == result.seed and "strength" in params  # the defaults it ran with
    assert row["image"] == str(image.resolve()) and row["mask"] == str(mask.resolve())
    assert row["image_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert row["mask_sha256"] == hashlib.sha256(mask.read_bytes()).hexdigest()
    assert row["time"] <= datetime.now().astimezone() and row["seconds"] >= 0
    assert stat.S_IMODE(journal_path().stat().st_mode) == 0o600


def test_no_key_and_no_image_bytes_in_the_journal_file(
        live_server: BackgroundServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAL_KEY", MARKER_FAL)
    monkeypatch.setenv("FLUXNB_KEY", MARKER_LOCAL)
    image, mask = _inputs(tmp_path)
    with _client(live_server, journal=True) as client:
        assert client.has_key
        client.run(prompt="keys stay out", image_url=make_test_image(80, 48), mask_url=mask)
    rows = read_rows()
    assert len(rows) == 1 and rows[0]["image"] is None and rows[0]["image_sha256"]
    blob = b"".join(p.read_bytes() for p in journal_path().parent.iterdir() if p.is_file())
    for secret in (MARKER_FAL, MARKER_LOCAL, "journalsecret", "localmarker"):
        assert secret.encode() not in blob
    assert b"\x89PNG" not in blob and b"base64" not in blob


def test_filters_by_prompt_date_and_backend(live_server: BackgroundServer, tmp_path: Path) -> None:
    image, mask = _inputs(tmp_path)
    with _client(live_server, journal=True) as client:
        for prompt in ("a red FOX in moss", "a grey cat"):
            client.run(prompt=prompt, image_url=image, mask_url=mask, steps=2)
    assert list(fluxnb.journal(prompt="fox")["prompt"]) == ["a red FOX in moss"]
    assert len(fluxnb.journal(prompt="A")) == 2 and len(fluxnb.journal(prompt="dog")) == 0
    assert len(fluxnb.journal(since=date.today())) == 2
    assert len(fluxnb.journal(since=(datetime.now() - timedelta(hours=1)).isoformat())) == 2
    assert len(fluxnb.journal(since=datetime.now().astimezone() + timedelta(minutes=5))) == 0
    assert len(fluxnb.journal(backend=_host(live_server))) == 2
    assert len(fluxnb.journal(backend="fal.ai")) == 0
    with pytest.raises(TypeError, match="since=5"):
        fluxnb.journal(since=5)  # type: ignore[arg-type]


def test_rerun_sends_the_same_parameters_and_inputs(live_server: BackgroundServer,
                                                    tmp_path: Path) -> None:
    image, mask = _inputs(tmp_path)
    with _client(live_server, journal=True) as client:
        first = client.run(prompt="again", image_url=image, mask_url=mask, steps=5)
        again = fluxnb.journal().rerun(-1, client=client)
        assert again.record is not None and first.record is not None
        # the same parameters, and the seed the first run drew is now fixed
        assert "seed" not in first.record["params"]
        assert again.record["params"] == {**first.record["params"], "seed": first.seed}
        assert again.record["inputs"] == first.record["inputs"]
        assert again.seed == first.seed and again.request_id != first.request_id
        frame = fluxnb.journal()
        assert list(frame["origin"]) == ["run", "rerun"]
        changed = frame.rerun(0, client=client, steps=3)
        assert changed.record is not None and changed.record["params"]["num_inference_steps"] == 3
        make_test_image(80, 48, seed=9).save(image)            # the input changed since
        with pytest.raises(RerunError, match="has changed since the run.*sha256"):
            frame.rerun(0, client=client)
        mask.unlink()
        with pytest.raises(RerunError, match=r"mask .*mask\.png is gone"):
            frame.rerun(0, client=client, image=image)
        with pytest.raises(IndexError, match="has 2 runs"):
            frame.rerun(5, client=client)


def test_journal_off_records_nothing(live_server: BackgroundServer, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    image, mask = _inputs(tmp_path)
    with _client(live_server) as client:                  # plain run: off by default
        client.run(prompt="p", image_url=image, mask_url=mask, steps=2)
    with _client(live_server, journal=False) as client, recording(origin="panel"):
        client.run(prompt="p", image_url=image, mask_url=mask, steps=2)
    monkeypatch.setenv("FLUXNB_JOURNAL", "0")
    with _client(live_server, journal=True) as client, recording(enabled=True, origin="cli"):
        client.run(prompt="p", image_url=image, mask_url=mask, steps=2)
    assert read_rows() == [] and len(fluxnb.journal()) == 0


def test_async_runs_and_timeouts_are_recorded(live_server: BackgroundServer,
                                              null_server: BackgroundServer, tmp_path: Path) -> None:
    image, mask = _inputs(tmp_path)

    async def main() -> None:
        async with AsyncQueueClient(live_server.base_url, poll_interval=0.05, journal=True) as c:
            await c.run(prompt="async", image_url=image, mask_url=mask, steps=2)

    asyncio.run(main())
    with _client(null_server, journal=True) as client, pytest.raises(JobTimeoutError):
        client.run(prompt="too slow", image_url=image, mask_url=mask, num_images=4, timeout=0.05)
    rows = read_rows()
    assert [(r["prompt"], r["status"]) for r in rows] == [("async", "completed"),
                                                          ("too slow", "timeout")]
    assert rows[1]["request_id"] and "JobTimeoutError" in rows[1]["error"]


@pytest.mark.parametrize("breakage", ["unwritable", "corrupt", "locked"])
def test_a_broken_journal_warns_once_and_runs_go_on(
        breakage: str, live_server: BackgroundServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    image, mask = _inputs(tmp_path)
    holder = None
    if breakage == "unwritable":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        monkeypatch.setenv("XDG_DATA_HOME", str(blocker))
    elif breakage == "corrupt":
        journal_path().parent.mkdir(parents=True)
        journal_path().write_bytes(b"this is not an SQLite database " * 100)
    else:
        monkeypatch.setattr(journal_module, "BUSY_TIMEOUT", 0.05)
        journal_module.write_row({"time": "2026-01-01T00:00:00+00:00", "prompt": "old"})
        holder = sqlite3.connect(journal_path(), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
    caplog.set_level(logging.WARNING, logger="fluxnb.journal")
    try:
        with _client(live_server, journal=True) as client:
            results = [client.run(prompt="goes on", image_url=image, mask_url=mask, steps=2)
                       for _ in range(2)]
    finally:
        if holder is not None:
            holder.rollback()
            holder.close()
    assert all(r.request_id for r in results)
    warnings = [r for r in caplog.records if r.name == "fluxnb.journal"]
    assert len(warnings) == 1, caplog.text
    assert "cannot be written" in warnings[0].getMessage() and "FLUXNB_JOURNAL=0" in \
        warnings[0].getMessage()


_WRITER = """
import sys
from fluxnb.client.journal import write_row
for i in range(int(sys.argv[2])):
    assert write_row({"time": "2026-01-01T00:00:00+00:00", "origin": sys.argv[1],
                      "prompt": f"p{i}", "params": {"i": i}}) is not None
"""


def test_two_processes_write_at_once() -> None:
    count = 40
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, name, str(count)],
                              stderr=subprocess.PIPE, text=True) for name in ("k1", "k2")]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert "cannot be written" not in "".join(errors)
    rows = read_rows()
    assert len(rows) == 2 * count
    assert {r["origin"] for r in rows} == {"k1", "k2"}
    with sqlite3.connect(journal_path()) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_fluxnb_run_records_a_row_with_its_outputs(live_server: BackgroundServer,
                                                   tmp_path: Path) -> None:
    image, mask = _inputs(tmp_path)
    args = [sys.executable, "-m", "fluxnb", "run", "--image", str(image), "--mask", str(mask),
            "--prompt", "cli fox", "--steps", "3", "--seed", "11", "--out", str(tmp_path / "out"),
            "--base-url", live_server.base_url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = read_rows()
    assert len(rows) == 1
    row = rows[0]
    assert row["origin"] == "cli" and row["status"] == "completed" and row["seed"] == 11
    assert row["params"]["num_inference_steps"] == 3 and row["image"] == str(image.resolve())
    assert row["outputs"] and all(Path(p).is_file() for p in row["outputs"])
    off = subprocess.run(args, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "FLUXNB_JOURNAL": "0"})
    assert off.returncode == 0, off.stderr
    assert len(read_rows()) == 1


def test_a_deleted_journal_is_made_again_on_the_next_write() -> None:
    assert journal_module.write_row({"time": "2026-01-01T00:00:00+00:00", "prompt": "a"})
    for path in journal_path().parent.iterdir():
        path.unlink()
    assert journal_module.write_row({"time": "2026-01-01T00:00:00+00:00", "prompt": "b"})
    assert [r["prompt"] for r in read_rows()] == ["b"]
