"""Sweep throughput against the local server, and a cached rerun.

* 200 jobs (``seed`` axis 1-200) against ``fluxnb serve --engine null`` at 50 ms per job with
  8 workers, run as a separate process on loopback (plain HTTP). The ideal is
  200 x 0.05 / 8 = 1.25 s; the number that matters is ideal / measured (target >= 0.9).
* A cached rerun of 100 of those cells in a new run folder: no request is sent (target < 1 s).

    python benchmarks/bench_sweep.py [--jobs 200] [--delay 0.05] [--workers 8] [--concurrency 10]

A sweep's slot covers a job's time on the server only: the next cell is submitted the moment a
job completes, while its result and image are fetched. With concurrency = workers, each worker
still waits for that round trip (completion seen, next submit, job queued: about 5 ms here); two
extra slots keep a job queued for every worker that frees up, so the default is workers + 2.

Not part of the test suite: it prints measured numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import ServeProcess  # noqa: E402


def _requests(base_url: str) -> int:
    """Requests the server has counted so far (queue routes and files)."""
    import httpx

    stats = httpx.get(f"{base_url}/_fluxnb/stats", timeout=5).json()
    return int(sum(stats["requests"].values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--cached", type=int, default=100, help="cells in the cached rerun")
    parser.add_argument("--delay", type=float, default=0.05, help="null engine seconds per job")
    parser.add_argument("--workers", type=int, default=8, help="server worker threads")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="sweep jobs on the server at once (default: workers + 2, so one is "
                             "always queued when a worker frees up)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    opts = parser.parse_args()
    if opts.concurrency is None:
        opts.concurrency = opts.workers + 2

    from PIL import Image

    import fluxnb
    from fluxnb.client import QueueClient

    base = {"prompt": "bench", "image_url": Image.new("RGB", (64, 64), (90, 120, 200)),
            "mask_url": Image.new("L", (64, 64), 255)}
    ideal = opts.jobs * opts.delay / opts.workers
    server = ServeProcess(["--engine", "null", "--engine-option", f"delay={opts.delay}",
                           "--workers", str(opts.workers)])
    with server, tempfile.TemporaryDirectory() as tmp, QueueClient(server.base_url) as client:
        warm = fluxnb.sweep(client, base, Path(tmp) / "warm", seed="1-16", cache=False,
                            progress=None, verbose=False, concurrency=opts.concurrency)
        assert warm.complete
        times = []
        for run in range(opts.repeat):
            folder = Path(tmp) / f"run{run}"
            t0 = time.perf_counter()
            result = fluxnb.sweep(client, base, folder, seed=f"1-{opts.jobs}",
                                  cache=Path(tmp) / f"cache{run}", concurrency=opts.concurrency,
                                  max_jobs=None, progress=None, verbose=False)
            times.append(time.perf_counter() - t0)
            assert result.complete and len(result.frame) == opts.jobs, result
            assert not result.frame["cached"].any()
        best = min(times)
        before = _requests(server.base_url)
        t0 = time.perf_counter()
        cached = fluxnb.sweep(client, base, Path(tmp) / "cached", seed=f"1-{opts.cached}",
                              cache=Path(tmp) / "cache0", concurrency=opts.concurrency,
                              progress=None, verbose=False)
        cached_s = time.perf_counter() - t0
        sent = _requests(server.base_url) - before
        assert cached.complete and cached.frame["cached"].all() and len(cached.frame) == opts.cached

    print(f"server: fluxnb serve --engine null (delay {opts.delay * 1e3:g} ms) --workers {opts.workers}, "
          f"loopback HTTP; sweep concurrency {opts.concurrency}")
    print(f"{opts.jobs} jobs: best {best:.3f} s of {opts.repeat} ({', '.join(f'{t:.3f}' for t in times)});"
          f" ideal {ideal:.3f} s; fraction of ideal throughput {ideal / best:.3f} (target >= 0.9)")
    print(f"cached rerun of {opts.cached} jobs: {cached_s:.3f} s, {sent} requests sent "
          "(target < 1 s, 0 requests)")


if __name__ == "__main__":
    main()
