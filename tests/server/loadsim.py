"""A class under load, simulated on loopback (issue 11, "Tests and measurements"): the simulator
that ``tests/server/test_class_load.py`` asserts on and ``benchmarks/class_load.py`` prints.

One :class:`~fluxnb.server.BackgroundServer` with a roster, the null engine at ``job_time``
seconds a job and ``workers`` workers; ``floods`` students each submit ``flood_jobs`` jobs as fast
as they can (backing off on 429 for its ``Retry-After``), the other students submit one job at a
time and think 1-3 s between jobs. Everything runs for ``traffic_s`` seconds of traffic, then the
quiet students' last jobs finish (bounded) and the server stops. Each student also tries to read
and cancel another student's request ids: every such try must answer 404.

A quiet student's *wait* is submit -> IN_PROGRESS, seen on the job's SSE status stream (the client
view), in job-times (``job_time``); the server's own record of the same wait is kept too. Think
time runs from the job's end (COMPLETED), so the quiet students are a closed loop: see
:func:`fair_share_wait` for the mean wait that capacity alone allows.

>>> report = run_load(LoadConfig(quiet=2, floods=1, flood_jobs=3, traffic_s=1))  # doctest: +SKIP
>>> print(report.text())                                                        # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from fluxnb.server import BackgroundServer, ServerConfig
from fluxnb.server.auth import Person, new_roster, write_roster

from .loadorders import other_order

__all__ = ["LoadConfig", "LoadReport", "fair_share_wait", "jain", "run_load", "server_rss"]

SUBMIT = "/fal-ai/flux-lora/inpainting"


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


#: A tiny image and mask (the null engine only echoes the image).
_IMAGE = _data_uri(Image.new("RGB", (16, 16), (200, 80, 40)))
_MASK = _data_uri(Image.new("L", (16, 16), 255))


@dataclass(frozen=True)
class LoadConfig:
    """The scenario: the issue's by default (30 students, 3 of them flooding with 50 jobs)."""

    quiet: int = 27
    floods: int = 3
    flood_jobs: int = 50
    think: tuple[float, float] = (1.0, 3.0)
    job_time: float = 0.2
    workers: int = 2
    traffic_s: float = 25.0
    drain_s: float = 8.0  # at most this long after the traffic for the quiet students' last jobs
    seed: int = 11
    max_queued: int | None = None  # None: the server's default (4 a person with a roster)
    #: "fair": the server's order (least recent work first); "sfq": start-time fair queuing
    #: without the idle credit (the order before it); "fifo": first come, first served
    scheduler: str = "fair"


@dataclass
class _Student:
    person: Person
    flooding: bool
    waits: list[float] = field(default_factory=list)  # seconds, submit -> IN_PROGRESS (SSE)
    seen: list[tuple[str, float, float]] = field(default_factory=list)  # (id, t0, t0 + wait)
    ids: list[str] = field(default_factory=list)
    accepted: int = 0
    completed: int = 0
    too_many: int = 0  # 429 answers
    other_errors: list[str] = field(default_factory=list)


@dataclass
class LoadReport:
    """What one run measured; :meth:`text` is the printed report."""

    config: LoadConfig
    duration_s: float
    quiet_waits: dict[str, list[float]]  # job-times, per quiet student (client view, SSE)
    server_waits: dict[str, list[float]]  # job-times, per student (the server's records)
    completed: dict[str, int]  # jobs that reached a worker during the traffic
    accepted: dict[str, int]
    too_many: dict[str, int]
    cross_reads: int
    cross_read_leaks: list[str]
    errors: list[str]
    rss_start_mb: float
    rss_peak_mb: float
    stats: dict[str, Any]
    #: the simulator's own lag, job-times: "submit" (client send -> server record) and
    #: "stream" (server start -> IN_PROGRESS seen), for the quiet jobs
    client_lag: dict[str, list[float]] = field(default_factory=dict)

    @property
    def quiet_worst(self) -> float:
        """The worst wait of any quiet student's job, in job-times."""
        return max((max(w) for w in self.quiet_waits.values() if w), default=0.0)

    @property
    def quiet_medians(self) -> dict[str, float]:
        return {k: statistics.median(w) for k, w in self.quiet_waits.items() if w}

    @property
    def quiet_worst_server(self) -> float:
        """The same worst wait in the server's own records (submitted -> started): the queue's
        part, without the simulator's own lag (``client_lag``)."""
        return max((max(self.server_waits[k], default=0.0) for k in self.quiet_waits), default=0.0)

    @property
    def quiet_median_server(self) -> float:
        """The median quiet wait in the server's own records, in job-times."""
        return statistics.median(x for k in self.quiet_waits for x in self.server_waits[k])

    @property
    def quiet_median(self) -> float:
        """The median wait over all quiet students' jobs, in job-times."""
        return statistics.median(x for w in self.quiet_waits.values() for x in w)

    @property
    def flooder_shares(self) -> dict[str, float]:
        """Each flooder's share of the jobs that ran during the traffic (1/30: one person's)."""
        total = sum(self.completed.values()) or 1
        return {k: n / total for k, n in self.completed.items() if k not in self.quiet_waits}

    @property
    def jain_quiet(self) -> float:
        quiet = [self.completed[k] for k in self.quiet_waits]
        return jain(quiet)

    @property
    def jain_all(self) -> float:
        return jain(list(self.completed.values()))

    def text(self) -> str:
        c = self.config
        medians = sorted(self.quiet_medians.values())
        worsts = sorted(max(w) for w in self.quiet_waits.values() if w)
        all_quiet = sorted(x for w in self.quiet_waits.values() for x in w)
        flooders = [k for k in self.completed if k not in self.quiet_waits]
        total = sum(self.completed.values()) or 1
        lines = [
            f"class load ({c.scheduler} order, max_queued {c.max_queued or 'default'}): "
            f"{c.quiet} quiet + {c.floods} flooding students ({c.flood_jobs} jobs "
            f"each), null engine {c.job_time} s/job, {c.workers} workers, {c.traffic_s:g} s of "
            f"traffic; ran {self.duration_s:.1f} s",
            f"quiet jobs: {len(all_quiet)}; wait (submit -> IN_PROGRESS, job-times): median "
            f"{_q(all_quiet, 0.5):.2f}, p95 {_q(all_quiet, 0.95):.2f}, worst {self.quiet_worst:.2f}",
            f"per quiet student: median wait {_span(medians)}; worst wait {_span(worsts)}",
            f"server-side waits (quiet): median {self.quiet_median_server:.2f}, worst "
            f"{self.quiet_worst_server:.2f} job-times; "
            f"flooders' median "
            f"{_q(sorted(x for k in flooders for x in self.server_waits[k]), 0.5):.2f}",
            f"throughput shares: quiet {sum(self.completed[k] for k in self.quiet_waits) / total:.0%}"
            f", flooders {', '.join(f'{self.completed[k] / total:.0%}' for k in flooders)}; "
            f"completed per quiet student {_span(sorted(self.completed[k] for k in self.quiet_waits))}",
            f"Jain's index: quiet {self.jain_quiet:.3f}, overall {self.jain_all:.3f}",
            f"capacity: {c.workers / c.job_time:g} jobs/s; quiet students offer "
            f"{c.quiet / (sum(c.think) / 2 + c.job_time):.1f} jobs/s at zero wait; mean wait "
            f"a fair share allows {fair_share_wait(c):.2f} job-times",
            f"429 answers: flooders {sum(self.too_many[k] for k in flooders)} "
            f"({', '.join(str(self.too_many[k]) for k in flooders)}), quiet "
            f"{sum(self.too_many[k] for k in self.quiet_waits)}; accepted per flooder "
            f"{', '.join(str(self.accepted[k]) for k in flooders)}",
            f"cross-student reads: {self.cross_reads} tried, {len(self.cross_read_leaks)} succeeded",
            f"simulator lag (job-times, median/worst): submit "
            f"{_q(sorted(self.client_lag.get('submit', [])), 0.5):.2f}/"
            f"{max(self.client_lag.get('submit', [0])):.2f}, stream "
            f"{_q(sorted(self.client_lag.get('stream', [])), 0.5):.2f}/"
            f"{max(self.client_lag.get('stream', [0])):.2f}",
            f"server RSS: {self.rss_start_mb:.0f} MB at start, {self.rss_peak_mb:.0f} MB peak",
            f"server stats: jobs {self.stats.get('jobs')}",
        ]
        if self.errors:
            lines.append(f"client errors ({len(self.errors)}): {self.errors[:5]}")
        return "\n".join(lines)


def jain(xs: list[int] | list[float]) -> float:
    """Jain's fairness index, (sum x)^2 / (n sum x^2): 1 when all are equal, 1/n at worst.

    >>> jain([3, 3, 3]), round(jain([1, 0, 0]), 3)
    (1.0, 0.333)
    """
    total, squares = sum(xs), sum(x * x for x in xs)
    return 1.0 if not squares else total * total / (len(xs) * squares)


def fair_share_wait(config: LoadConfig) -> float:
    """The mean quiet wait, in job-times, that capacity alone allows when every person gets an
    equal share: a quiet student's cycle is wait + job + mean think, and with the flooders
    backlogged the quiet students together get ``quiet / (quiet + floods)`` of the capacity.

    >>> fair_share_wait(LoadConfig())  # 30 / 10 jobs/s - 2 s think - 0.2 s job = 0.8 s
    4.0
    >>> fair_share_wait(LoadConfig(floods=0)), fair_share_wait(LoadConfig(workers=4))
    (2.5, 0.0)
    """
    capacity = config.workers / config.job_time * config.quiet / (config.quiet + config.floods)
    cycle = config.quiet / capacity - sum(config.think) / 2 - config.job_time
    return round(max(0.0, cycle) / config.job_time, 6)


def server_rss() -> float:
    """This process's resident memory in MB (the server runs in-process): psutil, else /proc."""
    try:
        import psutil
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0
    return float(psutil.Process(os.getpid()).memory_info().rss) / 2**20


def run_load(config: LoadConfig | None = None) -> LoadReport:
    """Run the scenario once and measure it (about ``traffic_s`` + a few seconds)."""
    config = config if config is not None else LoadConfig()
    people = new_roster(config.quiet + config.floods, teachers=1)
    students = [_Student(p, i < config.floods) for i, p in enumerate(people[:-1])]
    with tempfile.TemporaryDirectory(prefix="fluxnb-load-") as tmp:
        roster = write_roster(Path(tmp) / "roster.csv", people)
        server_config = ServerConfig(engine="null", engine_options={"delay": config.job_time},
                                     workers=config.workers, roster=str(roster), port=0,
                                     max_queued=config.max_queued)
        rss_start = server_rss()
        peak = [rss_start]
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(0.25):
                peak[0] = max(peak[0], server_rss())

        sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        with BackgroundServer(server_config) as server:
            if config.scheduler != "fair":  # the queue is empty yet: swap the order in place
                server.service._queue = other_order(config.scheduler)  # type: ignore[assignment]
            sampler.start()
            started = time.monotonic()
            leaks, tries, errors = asyncio.run(_drive(server.base_url, students, config))
            duration = time.monotonic() - started
            window_end = started + config.traffic_s
            stop_sampling.set()
            sampler.join()
            service = server.service
            server_waits: dict[str, list[float]] = {}
            for s in students:
                jobs = [service.get(i) for i in s.ids]
                # throughput: the jobs that reached a worker during the traffic
                s.completed = sum(1 for j in jobs if j is not None and j.started_at is not None
                                  and j.started_at <= window_end)
                server_waits[str(s.person.name)] = [
                    (j.started_at - j.submitted_at) / config.job_time
                    for j in jobs if j is not None and j.started_at is not None]
            stats = service.stats
            lag: dict[str, list[float]] = {"submit": [], "stream": []}
            for s in students:
                for request_id, t0, seen in s.seen:
                    j = service.get(request_id)
                    if j is not None and j.started_at is not None:
                        lag["submit"].append((j.submitted_at - t0) / config.job_time)
                        lag["stream"].append((seen - j.started_at) / config.job_time)
    name = {id(s): str(s.person.name) for s in students}
    return LoadReport(
        config=config, duration_s=duration,
        quiet_waits={name[id(s)]: [w / config.job_time for w in s.waits]
                     for s in students if not s.flooding},
        server_waits=server_waits,
        completed={name[id(s)]: s.completed for s in students},
        accepted={name[id(s)]: s.accepted for s in students},
        too_many={name[id(s)]: s.too_many for s in students},
        cross_reads=tries, cross_read_leaks=leaks,
        errors=errors + [e for s in students for e in s.other_errors],
        rss_start_mb=rss_start, rss_peak_mb=peak[0], stats=stats, client_lag=lag)


# -- the simulated students ----------------------------------------------------------------------


def _headers(person: Person) -> dict[str, str]:
    return {"Authorization": f"Key {person.token}"}


def _body(name: str, n: int) -> dict[str, Any]:
    return {"prompt": f"{name} job {n}", "image_url": _IMAGE, "mask_url": _MASK,
            "sync_mode": True}


async def _drive(base: str, students: list[_Student], config: LoadConfig
                 ) -> tuple[list[str], int, list[str]]:
    """All students at once; then every student tries another's ids (status, result, cancel)."""
    deadline = time.monotonic() + config.traffic_s
    rng = random.Random(config.seed)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    timeout = httpx.Timeout(30.0)
    leaks: list[str] = []
    tries = [0]
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        tasks = [asyncio.create_task(
            _flood(client, s, config, deadline) if s.flooding else
            _quiet(client, s, students, config, deadline, random.Random(rng.random()), leaks, tries))
            for s in students]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        for i, s in enumerate(students):  # the sweep: everyone against their neighbour's ids
            other = students[(i + 1) % len(students)]
            for request_id in other.ids[-3:]:
                await _cross_read(client, s.person, request_id, leaks, tries)
    return leaks, tries[0], errors


async def _submit(client: httpx.AsyncClient, s: _Student) -> tuple[dict[str, Any] | None, float]:
    """One submit: ``(body, 0)`` when accepted, ``(None, retry_after)`` on a 429."""
    r = await client.post(SUBMIT, json=_body(str(s.person.name), len(s.ids)),
                          headers=_headers(s.person))
    if r.status_code == 429:
        s.too_many += 1
        try:
            return None, min(5.0, max(0.05, float(r.headers.get("retry-after", "0.5"))))
        except ValueError:
            return None, 0.5
    if r.status_code != 200:
        s.other_errors.append(f"submit {r.status_code}: {r.text[:120]}")
        return None, 0.5
    job: dict[str, Any] = r.json()
    s.ids.append(job["request_id"])
    s.accepted += 1
    return job, 0.0


async def _flood(client: httpx.AsyncClient, s: _Student, config: LoadConfig,
                 deadline: float) -> None:
    while s.accepted < config.flood_jobs and time.monotonic() < deadline:
        job, retry_after = await _submit(client, s)
        if job is None:
            await asyncio.sleep(min(retry_after, max(0.0, deadline - time.monotonic())))


async def _quiet(client: httpx.AsyncClient, s: _Student, everyone: list[_Student],
                 config: LoadConfig, deadline: float, rng: random.Random, leaks: list[str],
                 tries: list[int]) -> None:
    await asyncio.sleep(rng.uniform(0, config.think[1]))  # students do not all start at once
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        job, retry_after = await _submit(client, s)
        if job is None:
            await asyncio.sleep(retry_after)
            continue
        wait = await _wait_for_start(client, s, job, t0, deadline + config.drain_s)
        if wait is not None:
            s.waits.append(wait)
            s.seen.append((job["request_id"], t0, t0 + wait))
        others = [o for o in everyone if o is not s and o.ids]
        if others:  # now and then, peek at someone else's job
            await _cross_read(client, s.person, rng.choice(others).ids[-1], leaks, tries)
        await asyncio.sleep(min(rng.uniform(*config.think), max(0.0, deadline - time.monotonic())))


async def _wait_for_start(client: httpx.AsyncClient, s: _Student, job: dict[str, Any],
                          t0: float, give_up_at: float) -> float | None:
    """Seconds from ``t0`` to IN_PROGRESS, read on the status stream (which ends at COMPLETED);
    when the first event is already COMPLETED, its end minus its inference time."""
    started: float | None = None
    budget = max(0.5, give_up_at - time.monotonic())
    try:
        async with asyncio.timeout(budget):
            async with client.stream("GET", job["status_url"] + "/stream",
                                     headers=_headers(s.person)) as r:
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[5:])
                    now = time.monotonic()
                    if event["status"] == "IN_PROGRESS" and started is None:
                        started = now - t0
                    elif event["status"] == "COMPLETED":
                        if started is None:
                            ran = (event.get("metrics") or {}).get("inference_time") or 0.0
                            started = max(0.0, now - t0 - ran)
                        break
    except TimeoutError:
        s.other_errors.append("a quiet job did not finish before the drain ended")
        return started
    return started


async def _cross_read(client: httpx.AsyncClient, person: Person, request_id: str,
                      leaks: list[str], tries: list[int]) -> None:
    """Status, result and cancel of someone else's request id: each must be a 404."""
    base = f"{SUBMIT.rsplit('/', 1)[0]}/requests/{request_id}"
    for method, path in (("GET", "/status"), ("GET", ""), ("PUT", "/cancel")):
        tries[0] += 1
        r = await client.request(method, base + path, headers=_headers(person))
        if r.status_code != 404:
            leaks.append(f"{person.name} {method} {path or '/'} of {request_id}: {r.status_code}")


def _q(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def _span(xs: list[float] | list[int]) -> str:
    if not xs:
        return "-"
    return f"{min(xs):.2f}..{max(xs):.2f} (median {statistics.median(xs):.2f})"
