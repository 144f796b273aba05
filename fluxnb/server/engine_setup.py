"""The engines a job service runs: one replica per device (``--devices``), each built with the
class server's options that its engine takes, and each with its worker and concurrency slots.

>>> from fluxnb.server.config import ServerConfig
>>> from fluxnb.server.inputs import ImageLimits
>>> from fluxnb.server.store import InMemoryResultStore
>>> replicas = build_replicas(ServerConfig(engine="null", workers=2), None,
...                           InMemoryResultStore(), ImageLimits())
>>> [(r.engine.name, r.device) for r in replicas]
[('null', None)]
"""

from __future__ import annotations

import threading

from .config import ServerConfig
from .engines import Engine, create_engine
from .inputs import ImageLimits
from .replicas import Replica, resolve_devices
from .store import ResultStore
from .worker import Worker

__all__ = ["build_replicas", "make_engine"]


def build_replicas(config: ServerConfig, engine: Engine | None, store: ResultStore,
                   limits: ImageLimits) -> list[Replica]:
    """The replicas a service with ``config`` runs: ``engine`` alone when given (tests, embedded
    servers), else one engine per device ``config.devices`` names (one when none does)."""
    devices = resolve_devices(config.devices) if engine is None else (None,)
    engines = [engine] if engine is not None else [make_engine(config, d) for d in devices]
    return [Replica(e, Worker(e, store, limits, config.fetch_timeout),
                    threading.BoundedSemaphore(_slots(config.workers, e)), device)
            for e, device in zip(engines, devices, strict=True)]


def make_engine(config: ServerConfig, device: str | None = None) -> Engine:
    """The engine ``config`` names (one replica; ``device`` for ``--devices``), given the class
    server's options that engine takes: ``device`` and the LoRA rules (diffusers), the upstream
    and the server's own key (fal)."""
    options = dict(config.engine_options)
    if config.engine == "diffusers":
        if device is not None:
            options["device"] = device
        options.setdefault("lora_dir", config.lora_dir)
        options.setdefault("allow_hub_loras", config.allow_hub_loras)
        # LoRA URLs go through the same fetch guard as image_url / mask_url
        options.setdefault("allow_private_fetch", config.allow_private_fetch)
        options.setdefault("fetch_allow_loopback", config.fetch_allow_loopback)
        options.setdefault("fetch_timeout", config.fetch_timeout)
    elif config.engine == "fal":
        if config.upstream is not None:
            options.setdefault("upstream", config.upstream)
        options.setdefault("key", config.fal_key)
    return create_engine(config.engine, **options)


def _slots(workers: int, engine: Engine) -> int:
    """Concurrent jobs on one replica: ``workers``, at most what the engine allows."""
    if engine.max_concurrency is None:
        return workers
    return max(1, min(workers, engine.max_concurrency))
