"""A sweep killed mid-way (SIGKILL) resumes to a complete, duplicate-free frame; a SIGINT
cancels the jobs in flight and keeps the finished rows."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fluxnb.server import BackgroundServer
from fluxnb.sweeps import Sweep
from tests.support import eventually
from tests.sweep_support import run_sweep

ROOT = Path(__file__).resolve().parents[2]
Factory = Callable[..., BackgroundServer]
STEPS = "1-8"                     # x strength [0.5, 1.0]: 16 cells
CELLS = 16

pytestmark = pytest.mark.slow


def _start(base_url: str, folder: Path, concurrency: int, mode: str = "script"
           ) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.sweep_support", base_url, str(folder), "off", STEPS,
         str(concurrency), mode], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def _rows_written(folder: Path) -> int:
    try:
        lines = (folder / "rows.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if '"kind": "row"' in line)


def _wait_rows(proc: subprocess.Popen[str], folder: Path, n: int, limit: float = 60.0) -> None:
    def written() -> bool:
        assert proc.poll() is None, f"the sweep ended early: {proc.communicate()[0]}"
        return _rows_written(folder) >= n

    eventually(written, limit, "the sweep made no progress")


def _server_jobs_by_cell(server: BackgroundServer) -> collections.Counter[tuple[int, float, int]]:
    jobs = list(server.service._jobs.values())
    return collections.Counter((j.params["num_inference_steps"], j.params["strength"], j.params["seed"])
                               for j in jobs)


def test_killed_sweep_resumes_complete_without_duplicates(server_factory: Factory,
                                                          tmp_path: Path) -> None:
    server = server_factory(engine="null", engine_options={"delay": 0.15}, workers=2)
    folder = tmp_path / "run"
    proc = _start(server.base_url, folder, concurrency=3)
    try:
        _wait_rows(proc, folder, 4)
    finally:
        proc.send_signal(signal.SIGKILL)                         # a real crash: no cleanup at all
        proc.communicate(timeout=10)

    crashed = Sweep.load(folder)
    first = crashed.frame
    assert 4 <= len(first) < CELLS and not crashed.complete
    assert (first["status"] == "ok").all()                     # finished rows only
    assert first["cell"].is_unique
    records = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines() if line]
    in_flight = {r["key"] for r in records if r["kind"] == "submitted"} - set(first["key"])

    resumed = run_sweep(server.base_url, str(folder), "off", STEPS, 3)
    frame = resumed.frame
    assert resumed.complete and len(frame) == CELLS
    assert frame["cell"].tolist() == list(range(CELLS))        # nothing missing, nothing twice
    assert frame["key"].is_unique and frame["request_id"].is_unique
    done_before = dict(zip(first["cell"], first["request_id"], strict=True))
    assert {c: r for c, r in zip(frame["cell"], frame["request_id"], strict=True)
            if c in done_before} == done_before                # finished cells were not run again
    per_cell = _server_jobs_by_cell(server)
    for _, row in first.iterrows():                            # ... nor resubmitted to the server
        assert per_cell[(row["num_inference_steps"], row["strength"], row["seed"])] == 1
    for key in in_flight:                                      # queued at the crash: re-attached
        row = frame[frame["key"] == key].iloc[0]
        assert per_cell[(row["num_inference_steps"], row["strength"], row["seed"])] == 1
    # a submit answered in the instant before the kill, before its record was written, is the
    # only way to a second job for a cell: at most one per concurrent slot
    assert CELLS <= server.service.stats["jobs"]["submitted"] <= CELLS + 3
    assert Sweep.load(folder).frame.drop(columns=["finished_at"]).equals(
        frame.drop(columns=["finished_at"]))


@pytest.mark.parametrize("mode", ["script", "in-loop"])
def test_sigint_cancels_in_flight_jobs_and_keeps_rows(server_factory: Factory, tmp_path: Path,
                                                      mode: str) -> None:
    """Ctrl-C in a script (asyncio.run path) and in a running loop (worker-thread path)."""
    server = server_factory(engine="null", engine_options={"delay": 0.3}, workers=2)
    folder = tmp_path / "run"
    proc = _start(server.base_url, folder, concurrency=4, mode=mode)
    try:
        _wait_rows(proc, folder, 2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "sweep interrupted: kept" in out and "interrupted=True" in out
    frame = Sweep.load(folder).frame
    ok, cancelled = frame[frame["status"] == "ok"], frame[frame["status"] == "cancelled"]
    assert len(ok) >= 2 and len(cancelled) >= 1 and len(ok) + len(cancelled) < CELLS
    stats = server.service.stats
    assert stats["requests"]["cancel"] == len(cancelled)
    eventually(lambda: server.service.stats["queued"] == 0 and server.service.stats["running"] == 0,
               10, lambda: f"still queued or running: {server.service.stats}")
    stats = server.service.stats
    assert stats["jobs"]["cancelled"] >= 1
