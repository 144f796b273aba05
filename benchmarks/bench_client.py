"""fluxnb's client against the official fal-client, side by side, on one local server.

Both talk to the same ``fluxnb serve --engine null`` (zero-cost engine, TLS with a self-signed
certificate so fal-client runs unmodified), in one run:

* per-job overhead: K sequential jobs; wall time per job (the engine costs nothing, so all of it is
  client + protocol + server overhead) and the client process's own CPU time per job (the server
  runs in another process, so this is the client's overhead alone);
* throughput: N jobs submitted at once through each client's async API, jobs per second.

    python benchmarks/bench_client.py [--jobs 40] [--concurrent 64] [--workers 8]

Not part of the test suite: it prints measured numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import ServeProcess, self_signed_cert  # noqa: E402

APP = "fal-ai/flux-lora/inpainting"

_FAL_SIDE = r'''
import asyncio, json, sys, time
import fal_client
APP = "fal-ai/flux-lora/inpainting"
jobs, concurrent, image, mask = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
args = {"prompt": "p", "image_url": image, "mask_url": mask, "seed": 1}
fal_client.subscribe(APP, arguments=args)            # warm-up: connection, TLS session
t0, c0 = time.perf_counter(), time.process_time()
for _ in range(jobs):
    fal_client.subscribe(APP, arguments=args)
sequential = (time.perf_counter() - t0) / jobs
cpu = (time.process_time() - c0) / jobs
async def many():
    client = fal_client.AsyncClient()
    await client.subscribe(APP, arguments=args)
    t0 = time.perf_counter()
    await asyncio.gather(*(client.subscribe(APP, arguments=args) for _ in range(concurrent)))
    return time.perf_counter() - t0
print(json.dumps({"per_job_s": sequential, "cpu_per_job_s": cpu, "concurrent_s": asyncio.run(many())}))
'''


def _fluxnb_side(base_url: str, cert: str, jobs: int, concurrent: int, image: str, mask: str) -> dict:
    from fluxnb.client import AsyncQueueClient, QueueClient

    args = {"prompt": "p", "image_url": image, "mask_url": mask, "seed": 1}
    with QueueClient(base_url, verify=cert) as client:
        client.run(**args)  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(jobs):
            client.run(**args)
        sequential = (time.perf_counter() - t0) / jobs
        cpu = (time.process_time() - c0) / jobs

    async def many() -> float:
        async with AsyncQueueClient(base_url, verify=cert) as aclient:
            await aclient.run(**args)
            t0 = time.perf_counter()
            await asyncio.gather(*(aclient.run(**args) for _ in range(concurrent)))
            return time.perf_counter() - t0

    return {"per_job_s": sequential, "cpu_per_job_s": cpu, "concurrent_s": asyncio.run(many())}


def _measure(delay: float, opts: argparse.Namespace, image: str, mask: str, tmp: Path) -> tuple[dict, dict]:
    cert, key = self_signed_cert(tmp)
    server = ServeProcess(["--engine", "null", "--engine-option", f"delay={delay}",
                           "--workers", str(opts.workers)], cert=cert, key=key)
    with server:
        ours = _fluxnb_side(server.base_url, str(cert), opts.jobs, opts.concurrent, image, mask)
        env = dict(os.environ, FAL_KEY="bench", FAL_QUEUE_RUN_HOST=f"127.0.0.1:{server.port}",
                   FAL_RUN_HOST=f"127.0.0.1:{server.port}", SSL_CERT_FILE=str(cert),
                   NO_PROXY="127.0.0.1,localhost")
        done = subprocess.run([sys.executable, "-c", _FAL_SIDE, str(opts.jobs), str(opts.concurrent),
                               image, mask], env=env, capture_output=True, text=True, check=True)
        theirs = json.loads(done.stdout)
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=40, help="sequential jobs per client")
    parser.add_argument("--concurrent", type=int, default=64, help="jobs submitted at once")
    parser.add_argument("--workers", type=int, default=8, help="server worker threads")
    parser.add_argument("--delays", default="0,0.05",
                        help="null-engine seconds per job to measure, comma-separated (0 = zero-cost)")
    opts = parser.parse_args()

    from PIL import Image

    from fluxnb.images import to_data_uri

    image = to_data_uri(Image.new("RGB", (64, 64), (90, 120, 200)))
    mask = to_data_uri(Image.new("L", (64, 64), 255), mask=True)
    print(f"server: fluxnb serve --engine null --workers {opts.workers} (TLS, loopback); "
          f"{opts.jobs} sequential jobs, {opts.concurrent} concurrent")
    print(f"{'':34}{'fluxnb':>10}{'fal-client':>12}{'ratio':>8}")
    for delay in (float(d) for d in opts.delays.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            ours, theirs = _measure(delay, opts, image, mask, Path(tmp))
        label = "zero-cost engine" if delay == 0 else f"engine {delay * 1e3:g} ms/job"
        over = ((ours["per_job_s"] - delay) * 1e3, (theirs["per_job_s"] - delay) * 1e3)
        print(f"[{label}]")
        print(f"{'  per-job overhead (ms)':34}{over[0]:10.1f}{over[1]:12.1f}{over[0] / over[1]:8.2f}")
        cpu = (ours["cpu_per_job_s"] * 1e3, theirs["cpu_per_job_s"] * 1e3)
        print(f"{'  client CPU per job (ms)':34}{cpu[0]:10.2f}{cpu[1]:12.2f}{cpu[0] / cpu[1]:8.2f}")
        thr = (opts.concurrent / ours["concurrent_s"], opts.concurrent / theirs["concurrent_s"])
        print(f"{'  concurrent throughput (jobs/s)':34}{thr[0]:10.1f}{thr[1]:12.1f}{thr[0] / thr[1]:8.2f}")
    print("overhead = wall time per sequential job minus the engine's own time; target ratio <= 0.30")


if __name__ == "__main__":
    main()
