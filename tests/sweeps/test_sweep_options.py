"""sweep()'s signature and options: keyword-only options, axes kept apart from them (a mapping or
keywords), SweepOptions checked once, and a per-job timeout through the client's own wait."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

import fluxnb
from fluxnb.client import QueueClient
from fluxnb.server import BackgroundServer
from fluxnb.sweeps import SweepOptions
from tests.sweep_support import small_inputs

Factory = Callable[..., BackgroundServer]
OPTIONS = ["seeds", "sample", "random_state", "concurrency", "max_jobs", "cache", "progress", "timeout",
           "price_per_megapixel", "seconds_per_job", "verbose", "dry_run", "journal"]


@pytest.mark.parametrize("fn", [fluxnb.sweep, fluxnb.asweep], ids=["sweep", "asweep"])
def test_signature_is_real(fn: Callable[..., object]) -> None:
    params = inspect.signature(fn).parameters
    kinds = {name: p.kind for name, p in params.items()}
    assert list(params)[:4] == ["client", "base_inputs", "folder", "axes"]
    assert all(kinds[n] is inspect.Parameter.POSITIONAL_ONLY for n in list(params)[:4])
    assert [n for n, k in kinds.items() if k is inspect.Parameter.KEYWORD_ONLY] == OPTIONS
    assert kinds["axis_kwargs"] is inspect.Parameter.VAR_KEYWORD
    assert OPTIONS == [f.name for f in dataclasses.fields(SweepOptions)]   # one list of options
    assert {n: params[n].default for n in OPTIONS} == {
        f.name: f.default for f in dataclasses.fields(SweepOptions)}


def test_options_are_frozen_and_checked_once() -> None:
    options = SweepOptions(concurrency=3, timeout=2.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.concurrency = 4  # type: ignore[misc]
    for bad in ({"concurrency": 0}, {"concurrency": True}, {"concurrency": 1.5},
                {"timeout": 0}, {"timeout": -1}, {"timeout": "5"}, {"max_jobs": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SweepOptions(**bad)
    with pytest.raises(TypeError, match="progress="):
        SweepOptions(progress="bar")  # type: ignore[arg-type]
    assert SweepOptions(cache=False).result_cache() is None


def _client() -> QueueClient:
    return QueueClient("http://127.0.0.1:9")  # never reached: dry runs send nothing


def test_axes_mapping_and_keywords(tmp_path: Path) -> None:
    with _client() as client:
        planned = fluxnb.sweep(client, small_inputs(), tmp_path / "a", {"steps": [1, 2]},
                               strength=[0.5, 1.0], timeout=5, dry_run=True, verbose=False)
        assert planned.cells == 4 and list(planned.axes) == ["num_inference_steps", "strength"]
        with pytest.raises(ValueError, match=r"given twice.*steps"):
            fluxnb.sweep(client, small_inputs(), tmp_path / "b", {"steps": [1]}, steps=[2],
                         dry_run=True, verbose=False)
        with pytest.raises(TypeError, match="axes must be a mapping"):
            fluxnb.sweep(client, small_inputs(), tmp_path / "c", [1, 2], dry_run=True)  # type: ignore[arg-type]
        # an axis named like an option reaches the plan (which says it is no field), never the options
        with pytest.raises(ValueError, match="timeout"):
            fluxnb.sweep(client, small_inputs(), tmp_path / "d", {"timeout": [1, 2]}, dry_run=True,
                         verbose=False)


def test_timeout_cancels_the_job_on_the_server(server_factory: Factory, tmp_path: Path) -> None:
    server = server_factory(engine="null", engine_options={"delay": 3.0}, workers=1)
    with QueueClient(server.base_url) as client:
        s = fluxnb.sweep(client, small_inputs(), tmp_path, steps=[1, 2], timeout=0.5, concurrency=2,
                         cache=False, progress=None, verbose=False)
    assert list(s.frame["phase"]) == ["timeout", "timeout"]
    assert s.frame["error"].str.contains("JobTimeoutError").all()
    assert s.frame["request_id"].notna().all()
    assert server.service.stats["requests"]["cancel"] == 2
