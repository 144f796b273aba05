"""The fair queue's cost per job at 10k queued over ~30 owners, and how long 8000 jobs expiring
together keep a status request waiting.

    .venv/bin/python benchmarks/scheduler_cost.py [--queued 10000] [--owners 30] [--expire 8000]

Prints microseconds per job for add, position and next (the scheduler alone, as the job service
calls it with its lock held), then the expiry run through a real JobService.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

from fluxnb.server import service as service_module
from fluxnb.server.config import ServerConfig
from fluxnb.server.scheduler import FairScheduler
from fluxnb.server.service import JobService

__all__ = ["main"]

PARAMS = {"prompt": "bench", "image_url": "data:,", "mask_url": "data:,"}


@dataclass(eq=False)
class _Item:
    priority: int
    seq: int
    owner: str | None
    cost: float


def _scheduler_cost(queued: int, owners: int) -> dict[str, float]:
    rng = random.Random(0)
    items = [_Item(1 if rng.random() < 0.05 else 0, i, f"s{rng.randrange(owners)}",
                   rng.choice([0.5, 1.0, 4.0])) for i in range(2 * queued)]
    queue: FairScheduler[_Item] = FairScheduler(lambda item: item.cost)
    for item in items[:queued]:  # fill to the level measured at
        queue.add(item)
    t0 = time.perf_counter()
    for item in items[queued:]:
        queue.add(item)
    t1 = time.perf_counter()
    for item in items[queued:]:
        queue.position(item)
    t2 = time.perf_counter()
    for _ in range(queued):
        queue.next()
    t3 = time.perf_counter()
    us = 1e6 / queued
    return {"add": (t1 - t0) * us, "position": (t2 - t1) * us, "next": (t3 - t2) * us}


class _Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _expiry(n: int) -> dict[str, Any]:
    clock = _Clock()
    real_time = service_module.time
    service_module.time = clock  # type: ignore[assignment]
    svc = JobService(ServerConfig(engine="null", max_queue=n + 10, max_queued_pixels=10**12))
    svc.start()
    try:
        svc.pause()
        other = svc.submit("fal-ai/flux-lora", PARAMS, owner="other")
        for i in range(n):
            svc.submit("fal-ai/flux-lora", PARAMS, start_timeout=60.0, owner=f"s{i % 30}")
        waits: list[float] = []
        done = threading.Event()

        def ask() -> None:
            while not done.is_set():
                t = time.perf_counter()
                svc.snapshot(other, False)
                waits.append(time.perf_counter() - t)
                time.sleep(0.0005)

        reader = threading.Thread(target=ask, daemon=True)
        reader.start()
        t0 = time.perf_counter()
        clock.offset = 120.0
        with svc._lock:
            svc._reap.notify_all()
        while svc.stats["jobs"]["timed_out"] < n:
            time.sleep(0.001)
        total = time.perf_counter() - t0
        done.set()
        reader.join()
    finally:
        svc.stop()
        service_module.time = real_time  # type: ignore[assignment]
    return {"total_s": total, "max_wait_ms": max(waits) * 1e3,
            "median_wait_ms": statistics.median(waits) * 1e3, "answers": len(waits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--owners", type=int, default=30)
    parser.add_argument("--expire", type=int, default=8000)
    args = parser.parse_args()
    cost = _scheduler_cost(args.queued, args.owners)
    print(f"fair scheduler at {args.queued} queued over {args.owners} owners: "
          f"add {cost['add']:.2f} us, position {cost['position']:.2f} us, "
          f"next {cost['next']:.2f} us, total {sum(cost.values()):.2f} us per job")
    if args.expire < 1:
        return
    exp = _expiry(args.expire)
    print(f"{args.expire} jobs expiring together: all failed in {exp['total_s']:.3f} s; "
          f"a status request waited at most {exp['max_wait_ms']:.2f} ms "
          f"(median {exp['median_wait_ms']:.3f} ms, {exp['answers']} answers meanwhile)")


if __name__ == "__main__":
    main()
