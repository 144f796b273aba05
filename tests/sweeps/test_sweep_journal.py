"""Sweeps in the run journal (issue 13, item 7): ``fluxnb.sweep(..., journal=True)`` records one
row per cell that ran (origin ``sweep``), the default follows the client, cached cells are not
recorded, ``.rerun(i)`` repeats a cell, and a broken journal never breaks a sweep."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

import fluxnb
from fluxnb.client import AsyncQueueClient, QueueClient
from fluxnb.client import journal as journal_module
from fluxnb.client.journal import journal_path, read_rows
from fluxnb.server import BackgroundServer
from tests.sweep_support import small_inputs

Factory = Callable[..., BackgroundServer]
MARKER = "sweepmarker-journal-4242"


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "_warned", set())


@pytest.fixture
def fast(server_factory: Factory) -> BackgroundServer:
    return server_factory(engine="null", engine_options={"delay": 0.01}, workers=4)


def _sweep(client: object, folder: Path, **kw: object) -> fluxnb.Sweep:
    kw.setdefault("cache", False)
    return fluxnb.sweep(client, small_inputs(), folder, steps=[1, 2, 3], strength=[0.5, 1.0],
                        seeds="per_cell", progress=None, verbose=False, **kw)


def test_journal_true_records_one_row_per_cell_with_the_frame_params(
        fast: BackgroundServer, tmp_path: Path) -> None:
    with QueueClient(fast.base_url, key=MARKER) as client:
        s = _sweep(client, tmp_path / "run", journal=True)
    rows = read_rows()
    assert len(rows) == 6 == len(s.frame)
    assert {r["origin"] for r in rows} == {"sweep"}
    assert {r["status"] for r in rows} == {"completed"}
    assert {r["backend"] for r in rows} == {fast.base_url.split("//", 1)[1]}
    by_request = {r["request_id"]: r for r in rows}
    assert set(by_request) == set(s.frame["request_id"])
    for _, cell in s.frame.iterrows():
        row = by_request[cell["request_id"]]
        assert row["params"]["num_inference_steps"] == cell["num_inference_steps"]
        assert row["params"]["strength"] == cell["strength"]
        assert row["seed"] == row["params"]["seed"] == cell["seed"]
        assert row["prompt"] == "a test"
        assert row["outputs"] == [str(Path(cell["file"]).resolve())]
        for column in ("image", "mask"):   # the run folder's copies, by path and sha256
            where = Path(row[column])
            assert where.parent == (tmp_path / "run" / "inputs").resolve()
            assert hashlib.sha256(where.read_bytes()).hexdigest() == row[f"{column}_sha256"]
    data = journal_path().read_bytes()
    assert MARKER.encode() not in data and b"data:image" not in data


def test_default_follows_the_client_and_false_records_nothing(
        fast: BackgroundServer, tmp_path: Path) -> None:
    with QueueClient(fast.base_url) as client:
        _sweep(client, tmp_path / "a")
    assert read_rows() == []
    with QueueClient(fast.base_url, journal=True) as client:
        _sweep(client, tmp_path / "b", journal=False)
        assert read_rows() == []
        _sweep(client, tmp_path / "c")                 # None: as the client, which records
    assert len(read_rows(origin="sweep")) == 6


def test_asweep_records_and_cached_cells_are_not_recorded(
        fast: BackgroundServer, tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncQueueClient(fast.base_url) as client:
            await fluxnb.asweep(client, small_inputs(), tmp_path / "a", steps=[1, 2],
                                cache=tmp_path / "cache", progress=None, verbose=False,
                                journal=True)
            again = await fluxnb.asweep(client, small_inputs(), tmp_path / "b", steps=[1, 2],
                                        cache=tmp_path / "cache", progress=None,
                                        verbose=False, journal=True)
            assert again.frame["cached"].all()

    asyncio.run(main())
    assert len(read_rows(origin="sweep")) == 2        # the second sweep sent nothing


def test_rerun_of_a_sweep_row_sends_its_params(fast: BackgroundServer, tmp_path: Path) -> None:
    with QueueClient(fast.base_url) as client:
        _sweep(client, tmp_path / "run", journal=True)
        runs = fluxnb.journal()
        sent = runs.iloc[3]
        result = runs.rerun(3, client)
    assert result.seed == sent["seed"]
    again = read_rows(origin="rerun")
    assert len(again) == 1
    assert again[0]["params"] == sent["params"]
    assert (again[0]["image_sha256"], again[0]["mask_sha256"]) == (sent["image_sha256"],
                                                                   sent["mask_sha256"])


def test_a_broken_journal_never_breaks_the_sweep(fast: BackgroundServer, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    journal_path().mkdir(parents=True)                # a folder where the file should be
    with QueueClient(fast.base_url) as client:
        s = _sweep(client, tmp_path / "run", journal=True)
    assert s.complete and (s.frame["status"] == "ok").all()
    assert sum("cannot be written" in r.getMessage() for r in caplog.records) == 1


def test_journal_option_is_checked() -> None:
    with pytest.raises(TypeError, match="journal='yes'"):
        fluxnb.sweep(None, small_inputs(), None, steps=[1], journal="yes")  # type: ignore[arg-type]
