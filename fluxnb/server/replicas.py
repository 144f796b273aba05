"""One engine replica per device (``--devices cuda:0,cuda:1`` or ``all``), each with its own
worker and concurrency slots, all fed by the job service's one fair queue.

>>> resolve_devices(())
(None,)
>>> resolve_devices(("cpu", "cpu"))
('cpu', 'cpu')
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .engines import Engine
from .worker import Worker

__all__ = ["Replica", "input_size", "resolve_devices"]


def resolve_devices(devices: Sequence[str]) -> tuple[str | None, ...]:
    """The devices to run replicas on: ``(None,)`` (the engine's own choice) when none are
    named; ``all`` is every CUDA device torch sees, and a ValueError naming the flag when there
    is none."""
    if not devices:
        return (None,)
    if [d.lower() for d in devices] != ["all"]:
        if any(d.lower() == "all" for d in devices):
            raise ValueError(f"--devices {','.join(devices)}: 'all' stands alone "
                             "(or list the devices, such as cuda:0,cuda:1)")
        return tuple(devices)
    count = _cuda_count()
    if count < 1:
        raise ValueError("--devices all: no CUDA device found (torch.cuda.device_count() is 0 "
                         "or torch is not installed); name the devices instead, such as "
                         "--devices cpu, or leave --devices out")
    return tuple(f"cuda:{i}" for i in range(count))


def _cuda_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count())


@dataclass(eq=False)
class Replica:
    """One engine on one device, the worker that drives it and its concurrency slots."""

    engine: Engine
    worker: Worker
    slots: threading.BoundedSemaphore
    device: str | None = None
    #: jobs this replica ran to an outcome (the stats and the tests look at it)
    done: int = 0
    running: set[Any] = field(default_factory=set)

    def info(self) -> dict[str, Any]:
        """``{"device", "engine", "done", "running"}`` for stats and logs."""
        return {"device": self.device, "engine": self.engine.name, "done": self.done,
                "running": len(self.running)}


def input_size(data: bytes | Image.Image | None) -> tuple[int, int] | None:
    """(width, height) of a queued input from its header alone (no decoding); None if unknown."""
    if isinstance(data, Image.Image):
        return data.size
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - any unreadable header just means "unknown"
        return None
