"""Support code for the sweep tests: a fault-injecting httpx transport and a sweep run as a
separate process (to kill it, or interrupt it, mid-way).

    python -m tests.sweep_support BASE_URL FOLDER CACHE_DIR STEPS CONCURRENCY
"""

from __future__ import annotations

import random
import sys
import threading
from collections import Counter
from typing import Any

import httpx
import numpy as np
from PIL import Image


def small_inputs() -> dict[str, Any]:
    """Base inputs made in code, byte-identical in every process."""
    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    mask = np.zeros((48, 64), np.uint8)
    mask[12:36, 20:44] = 255
    return {"prompt": "a test", "image_url": Image.fromarray(rgb, "RGB"),
            "mask_url": Image.fromarray(mask, "L")}


class FaultTransport(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """Answers a seeded fraction of requests with 503 or 429, or refuses them with ConnectError,
    *before* they reach the real server; the rest are forwarded. ``faults`` counts what was
    injected by (method, kind)."""

    def __init__(self, rate: float = 0.2, seed: int = 0):
        self.rate = rate
        self.seed = seed
        self._rngs: dict[str, random.Random] = {}  # one stream per method: POST faults repeat
        self._lock = threading.Lock()
        self.faults: Counter[tuple[str, str]] = Counter()
        self.forwarded: Counter[str] = Counter()
        self._async = httpx.AsyncHTTPTransport()
        self._sync = httpx.HTTPTransport()

    def _fault(self, request: httpx.Request) -> httpx.Response | None:
        with self._lock:
            rng = self._rngs.setdefault(request.method, random.Random(f"{self.seed}-{request.method}"))
            if rng.random() >= self.rate:
                self.forwarded[request.method] += 1
                return None
            kind = rng.choice(["503", "429", "refused"])
            self.faults[(request.method, kind)] += 1
        if kind == "refused":
            raise httpx.ConnectError("injected: connection refused", request=request)
        return httpx.Response(int(kind), json={"detail": f"injected {kind}"}, request=request,
                              headers={"Retry-After": "0"})

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        fault = self._fault(request)
        if fault is not None:
            return fault
        return await self._async.handle_async_request(request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        fault = self._fault(request)
        if fault is not None:
            return fault
        return self._sync.handle_request(request)

    async def aclose(self) -> None:
        await self._async.aclose()

    def close(self) -> None:
        self._sync.close()


def run_sweep(base_url: str, folder: str, cache: str, steps: str, concurrency: int) -> Any:
    import fluxnb
    from fluxnb.client import QueueClient

    with QueueClient(base_url) as client:
        return fluxnb.sweep(client, small_inputs(), folder, steps=steps, strength=[0.5, 1.0],
                            concurrency=concurrency, cache=False if cache == "off" else cache,
                            progress=None, seeds="per_cell")


def main(argv: list[str]) -> None:
    args = (argv[1], argv[2], argv[3], argv[4], int(argv[5]))
    if len(argv) > 6 and argv[6] == "in-loop":
        # as in a Jupyter cell: a loop is running (SIGINT raises KeyboardInterrupt, as the
        # kernel's handler does), so the sync facade runs the sweep in a worker thread
        import asyncio

        async def cell() -> Any:
            asyncio.get_running_loop()
            return run_sweep(*args)

        loop = asyncio.new_event_loop()
        try:
            result = loop.run_until_complete(cell())
        finally:
            loop.close()
    else:
        result = run_sweep(*args)
    print(f"DONE rows={len(result.frame)} interrupted={result.interrupted}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
