"""Faults injected before requests reach the server (503, 429, connection refused) on a fifth
of all requests: a 50-job sweep still completes every row and creates exactly 50 jobs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import fluxnb
from fluxnb.client import QueueClient
from fluxnb.server import BackgroundServer
from tests.sweep_support import FaultTransport, small_inputs

Factory = Callable[..., BackgroundServer]


@pytest.mark.slow
def test_fifty_jobs_through_faults_complete_without_duplicates(server_factory: Factory,
                                                               tmp_path: Path) -> None:
    server = server_factory(engine="null", engine_options={"delay": 0.01}, workers=8)
    faults = FaultTransport(rate=0.2, seed=2)   # seed 2: the submits meet all three faults
    with QueueClient(server.base_url, transport=faults, max_retries=10) as client:
        s = fluxnb.sweep(client, small_inputs(), tmp_path, seed="1-50", concurrency=8, cache=False,
                         progress=None, verbose=False)
    frame = s.frame
    assert len(frame) == 50 and s.complete and (frame["status"] == "ok").all()
    assert frame["seed"].tolist() == list(range(1, 51))
    assert frame["request_id"].is_unique
    stats = server.service.stats
    assert stats["jobs"]["submitted"] == 50                   # no duplicate job on the server
    assert stats["requests"]["submit"] == 50
    assert stats["jobs"]["completed"] == 50
    injected = sum(faults.faults.values())
    total = injected + sum(faults.forwarded.values())
    assert 0.12 < injected / total < 0.28
    post = {kind: n for (method, kind), n in faults.faults.items() if method == "POST"}
    assert set(post) == {"503", "429", "refused"} and sum(post.values()) >= 5
    assert faults.forwarded["POST"] == 50                     # each submit reached the server once
