"""The ``null`` engine: returns the input image unchanged, after an optional delay.

For tests and demos of queueing, progress and cancellation: it does no image work at all.

>>> from fluxnb.server.engines import create_engine
>>> create_engine("null", delay=0.2).generative
False
"""

from __future__ import annotations

import time

from .base import Engine, EngineOutput, EngineRequest, JobContext

__all__ = ["NullEngine"]

_SLICES = 10


class NullEngine(Engine):
    """Echo the input image ``num_images`` times, sleeping ``delay`` seconds per image in 10
    logged steps (so a cancel takes effect within ``delay / 10`` seconds)."""

    name = "null"
    description = "returns the input image unchanged; not a generative model"
    generative = False

    def __init__(self, delay: float = 0.0):
        if delay < 0:
            raise ValueError(f"delay must be >= 0, not {delay}")
        self.delay = float(delay)

    def run(self, request: EngineRequest, ctx: JobContext) -> EngineOutput:
        n = request.num_images
        pause = self.delay / _SLICES
        start = time.monotonic()
        for i in range(n):
            for k in range(1, _SLICES + 1):
                if pause:  # sleep to a deadline, so the overshoot of each sleep does not add up
                    time.sleep(max(0.0, start + (i * _SLICES + k) * pause - time.monotonic()))
                ctx.step(k, _SLICES, image_index=i, num_images=n)
        return EngineOutput(
            images=[request.image.copy() for _ in range(n)],
            extra={"engine": self.name,
                   "notice": "null engine: returns the input image unchanged; not a generative model"},
        )

    def info(self) -> dict[str, object]:
        return {**super().info(), "delay": self.delay}
