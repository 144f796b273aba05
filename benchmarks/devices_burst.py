"""A burst of jobs on one engine replica vs two (``--devices cpu,cpu``), the null engine at
0.2 s per job: two replicas should take about half the time.

    .venv/bin/python benchmarks/devices_burst.py [--jobs 12] [--delay 0.2]

Prints the wall time from the first submit to the last job done, per replica count.
"""

from __future__ import annotations

import argparse
import time

from PIL import Image

from fluxnb.protocol import COMPLETED
from fluxnb.server.config import ServerConfig
from fluxnb.server.service import JobService

__all__ = ["burst_seconds", "main"]

PARAMS = {"prompt": "bench", "image_url": "data:,", "mask_url": "data:,", "num_images": 1}


def burst_seconds(devices: tuple[str, ...], jobs: int, delay: float) -> float:
    """Seconds for ``jobs`` queued at once to finish on one replica per device."""
    config = ServerConfig(engine="null", engine_options={"delay": delay}, devices=devices)
    svc = JobService(config)
    svc.start()
    try:
        image, mask = Image.new("RGB", (64, 64), "gray"), Image.new("L", (64, 64), 255)
        t0 = time.perf_counter()
        queued = [svc.submit("fal-ai/flux-lora", PARAMS, image=image, mask=mask,
                             owner=f"s{i % 4}") for i in range(jobs)]
        while not all(j.state == COMPLETED for j in queued):
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
        assert all(j.ok for j in queued), [j.error for j in queued if not j.ok]
    finally:
        svc.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--delay", type=float, default=0.2)
    args = parser.parse_args()
    one = burst_seconds(("cpu",), args.jobs, args.delay)
    two = burst_seconds(("cpu", "cpu"), args.jobs, args.delay)
    print(f"burst of {args.jobs} jobs, null engine at {args.delay} s: one replica {one:.2f} s, "
          f"two replicas {two:.2f} s (x{one / two:.2f})")


if __name__ == "__main__":
    main()
