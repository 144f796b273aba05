"""Sweeps against real loopback servers: grid, seeds, failures, cache, resume, progress, sync
facade inside a running loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import fluxnb
from fluxnb.client import AsyncQueueClient, QueueClient
from fluxnb.server import BackgroundServer
from fluxnb.sweeps import Sweep, SweepTooLargeError
from tests.sweep_support import small_inputs

Factory = Callable[..., BackgroundServer]


@pytest.fixture
def fast(server_factory: Factory) -> BackgroundServer:
    return server_factory(engine="null", engine_options={"delay": 0.01}, workers=4)


def _jobs(server: BackgroundServer) -> int:
    return int(server.service.stats["jobs"]["submitted"])


def _requests(server: BackgroundServer) -> int:
    return sum(server.service.stats["requests"].values())


def test_grid_rows_columns_and_seeds(fast: BackgroundServer, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with QueueClient(fast.base_url) as client:
        s = fluxnb.sweep(client, small_inputs(), tmp_path / "run", steps=[1, 2, 3],
                         strength="0.5-1 [2]", seeds="per_cell", cache=False, progress=None)
    out = capsys.readouterr().out
    assert "sweep: 6 jobs" in out and "est. time" in out
    assert "cost" not in out and "$" not in out          # a local server is free: no price shown
    f = s.frame
    assert len(f) == 6 and s.complete and _jobs(fast) == 6
    assert f["cell"].tolist() == list(range(6))
    assert f["num_inference_steps"].tolist() == [1, 1, 2, 2, 3, 3]
    assert f["strength"].tolist() == [0.5, 1.0] * 3
    assert (f["status"] == "ok").all() and f["error"].isna().all()
    assert f["seed"].nunique() == 6                       # per-cell seeds, resolved and logged
    plan_seeds = [c["seed"] for c in json.loads((tmp_path / "run" / "sweep.json").read_text())["cells"]]
    assert f["seed"].tolist() == plan_seeds               # the server used the seed that was sent
    assert f["request_id"].nunique() == 6
    for name in ("prompt", "guidance_scale", "num_images", "output_format", "image_url", "mask_url"):
        assert name in f.columns
    assert f["image_url"].str.startswith("sha256:").all()
    assert (f["total_s"] >= f["inference_s"]).all() and (f["inference_s"] > 0).all()
    assert f["queue_s"].notna().all()
    for _, row in f.iterrows():
        data = Path(row["file"]).read_bytes()
        assert len(data) == row["bytes"]
        import hashlib

        assert hashlib.sha256(data).hexdigest() == row["sha256"]
    assert f["url"].str.startswith(fast.base_url).all()
    assert (f["psnr_outside"] > 10).all() and f["change_in_mask"].notna().all()
    assert "data:" not in (tmp_path / "run" / "rows.jsonl").read_text()


def test_one_row_per_output_image(fast: BackgroundServer, tmp_path: Path) -> None:
    with QueueClient(fast.base_url) as client:
        s = fluxnb.sweep(client, {**small_inputs(), "num_images": 2}, tmp_path, steps=[1, 2],
                         cache=False, progress=None, verbose=False)
    f = s.frame
    assert len(f) == 4 and _jobs(fast) == 2
    assert f["image_index"].tolist() == [0, 1, 0, 1]
    assert f.groupby("cell")["request_id"].nunique().tolist() == [1, 1]
    assert f["file"].nunique() == 4


def test_failed_cells_are_rows_and_do_not_stop_the_sweep(fast: BackgroundServer, tmp_path: Path) -> None:
    inputs = small_inputs()
    broken = f"{fast.base_url}/_fluxnb/files/nope/missing.png"   # the server cannot fetch it
    with QueueClient(fast.base_url, max_retries=0) as client:
        s = fluxnb.sweep(client, inputs, tmp_path, image=[inputs["image_url"], broken],
                         steps=[1, 2], cache=False, progress=None, verbose=False)
    f = s.frame
    assert len(f) == 4 and not s.complete
    assert f["status"].tolist() == ["ok", "ok", "error", "error"]
    bad = s.failed
    assert bad["error"].str.contains("JobFailedError").all()
    assert bad["request_id"].notna().all() and bad["phase"].eq("job").all()
    assert bad["image_url"].str.startswith("http").all()
    with QueueClient(fast.base_url, max_retries=0) as client:     # a rerun retries failed cells only
        again = fluxnb.sweep(client, inputs, tmp_path, image=[inputs["image_url"], broken],
                             steps=[1, 2], cache=False, progress=None, verbose=False)
    assert _jobs(fast) == 6 and len(again.frame) == 4
    assert again.frame["request_id"].tolist()[:2] == f["request_id"].tolist()[:2]


def test_cached_rerun_makes_no_request(fast: BackgroundServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = dict(steps=[1, 2, 3], strength=[0.5, 1.0], cache=cache, progress=None, verbose=False)
    with QueueClient(fast.base_url) as client:
        first = fluxnb.sweep(client, small_inputs(), tmp_path / "a", **args)
        before = _requests(fast)
        again = fluxnb.sweep(client, small_inputs(), tmp_path / "b", **args)
        assert _requests(fast) == before                     # not one request reached the server
        assert again.frame["cached"].all() and not first.frame["cached"].any()
        assert again.frame["sha256"].tolist() == first.frame["sha256"].tolist()
        assert again.frame["request_id"].tolist() == first.frame["request_id"].tolist()
        assert all(Path(p).parent == tmp_path / "b" / "images" for p in again.frame["file"])
        assert all(Path(p).is_file() for p in again.frame["file"])
        fluxnb.sweep(client, small_inputs(), tmp_path / "c", **{**args, "cache": False})
        assert _jobs(fast) == 12                              # cache off: the jobs ran again


def test_same_folder_resumes_without_requests(fast: BackgroundServer, tmp_path: Path) -> None:
    with QueueClient(fast.base_url) as client:
        fluxnb.sweep(client, small_inputs(), tmp_path, steps=[1, 2], cache=False, progress=None,
                     verbose=False)
        before = _requests(fast)
        again = fluxnb.sweep(client, small_inputs(), tmp_path, steps=[1, 2, 3], cache=False,
                             progress=None, verbose=False)
    assert _jobs(fast) == 3 and _requests(fast) - before == 4   # only the new cell: 4 requests
    assert again.complete and again.frame["cell"].tolist() == [0, 1, 2]
    loaded = Sweep.load(tmp_path)
    assert loaded.frame.drop(columns=["finished_at"]).equals(again.frame.drop(columns=["finished_at"]))


def test_progress_callable_and_max_jobs(fast: BackgroundServer, tmp_path: Path) -> None:
    seen: list[tuple[int, int, Any]] = []
    with QueueClient(fast.base_url) as client:
        with pytest.raises(SweepTooLargeError, match="max_jobs=5"):
            fluxnb.sweep(client, small_inputs(), tmp_path / "x", steps="1-6", max_jobs=5,
                         progress=None, cache=False, verbose=False)
        assert _jobs(fast) == 0
        fluxnb.sweep(client, small_inputs(), tmp_path / "y", steps="1-6", max_jobs=6, cache=False,
                     progress=lambda d, t, row: seen.append((d, t, row)), verbose=False)
    assert [d for d, _, _ in seen] == list(range(7)) and {t for _, t, _ in seen} == {6}
    assert seen[0][2] is None and all(row["status"] == "ok" for _, _, row in seen[1:])


def test_dry_run_sends_nothing(fast: BackgroundServer, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    with QueueClient(fast.base_url) as client:
        s = fluxnb.sweep(client, small_inputs(), tmp_path, seed="1-200", dry_run=True)
    assert "sweep: 200 jobs" in capsys.readouterr().out
    assert _requests(fast) == 0 and len(s.frame) == 0 and s.cells == 200


def test_the_preflight_names_the_cost_on_fal_only(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A fal-looking client (dry run: nothing is sent, no network) gets the price in its line."""
    with QueueClient("https://queue.fal.run", key="id:secret") as client:
        fluxnb.sweep(client, small_inputs(), tmp_path, steps=[1, 2], dry_run=True, cache=False)
    out = capsys.readouterr().out
    assert "sweep: 2 jobs" in out and "est. cost $" in out and "at $0.035/MP" in out


def test_sync_sweep_inside_a_running_loop(fast: BackgroundServer, tmp_path: Path) -> None:
    """As in a Jupyter cell: a loop is running, so the facade uses a worker thread."""
    async def cell() -> Sweep:
        asyncio.get_running_loop()
        client = AsyncQueueClient(fast.base_url)         # bound to this loop: the sweep uses a twin
        try:
            return fluxnb.sweep(client, small_inputs(), tmp_path, steps=[1, 2], cache=False,
                                progress="auto", verbose=False)
        finally:
            await client.aclose()

    s = asyncio.run(cell())
    assert s.complete and len(s.frame) == 2


@pytest.mark.anyio
async def test_asweep_in_the_callers_loop(fast: BackgroundServer, tmp_path: Path) -> None:
    async with AsyncQueueClient(fast.base_url) as client:
        s = await fluxnb.asweep(client, small_inputs(), tmp_path, guidance=[2.0, 4.0], seeds=11,
                                cache=False, progress=None, verbose=False)
    assert s.frame["seed"].tolist() == [11, 11] and s.frame["guidance_scale"].tolist() == [2.0, 4.0]


@pytest.mark.anyio
async def test_cancel_cancels_in_flight_jobs_and_keeps_finished_rows(
        server_factory: Factory, tmp_path: Path) -> None:
    server = server_factory(engine="null", engine_options={"delay": 0.3}, workers=2)
    reported: list[str] = []
    two_done = asyncio.Event()

    def progress(done: int, total: int, row: Any) -> None:
        if row is not None:
            reported.append(row["request_id"])
        if len(reported) >= 2:
            two_done.set()

    async with AsyncQueueClient(server.base_url) as client:
        task = asyncio.create_task(fluxnb.asweep(client, small_inputs(), tmp_path, steps="1-12",
                                                 concurrency=4, cache=False, progress=progress,
                                                 verbose=False))
        await asyncio.wait_for(two_done.wait(), 20)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    s = Sweep.load(tmp_path)
    ok = s.frame[s.frame["status"] == "ok"]
    assert set(reported) <= set(ok["request_id"])             # every finished row was kept
    assert 2 <= len(ok) < 12
    cancelled = s.frame[s.frame["status"] == "cancelled"]
    assert len(cancelled) >= 1
    stats = server.service.stats
    assert stats["jobs"]["cancelled"] >= 1 and stats["requests"]["cancel"] == len(cancelled)
    assert stats["queued"] == 0                               # nothing left waiting on the server
    assert stats["jobs"]["submitted"] < 12                   # the rest were never sent


def test_keyed_server_key_reaches_the_server_but_no_file(server_factory: Factory, tmp_path: Path) -> None:
    key = "sweep-secret-" + "k" * 16
    server = server_factory(engine="null", engine_options={"delay": 0.0}, key=key)
    with QueueClient(server.base_url, key=key) as client:          # the sweep's async twin keeps it
        s = fluxnb.sweep(client, small_inputs(), tmp_path / "run", steps=[1, 2],
                         cache=tmp_path / "cache", progress=None, verbose=False)
    assert s.complete
    with QueueClient(server.base_url, key="wrong", max_retries=0) as client:
        bad = fluxnb.sweep(client, small_inputs(), tmp_path / "bad", steps=[3], cache=False,
                           progress=None, verbose=False)
    assert "401" in bad.frame["error"].iloc[0]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    assert key not in repr(s) and key not in s.frame.to_csv()
