"""The local server's settings: one dataclass, every field with a safe default.

>>> from fluxnb.server import ServerConfig
>>> cfg = ServerConfig(engine="null", port=0, key="secret")
>>> "secret" in repr(cfg)
False
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..schema import ENDPOINT_ID

__all__ = ["ServerConfig"]

_MIB = 1024 * 1024


@dataclass
class ServerConfig:
    """How a local fal-compatible server listens, which engine it runs and its safety limits.

    ``port=0`` picks a free port. When ``key`` is set every queue route requires
    ``Authorization: Key <key>`` (the key never appears in reprs or logs). ``certfile`` and
    ``keyfile`` turn on TLS. ``app_ids`` are the fal app ids the server accepts submits on.

    >>> ServerConfig().host
    '127.0.0.1'
    """

    host: str = "127.0.0.1"
    port: int = 8000
    engine: str = "preview"
    engine_options: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    key: str | None = field(default=None, repr=False)
    certfile: str | None = None
    keyfile: str | None = None
    app_ids: tuple[str, ...] = (ENDPOINT_ID,)
    max_body_bytes: int = 64 * _MIB
    max_image_bytes: int = 32 * _MIB
    max_image_pixels: int = 50_000_000
    fetch_timeout: float = 20.0
    #: let ``image_url`` / ``mask_url`` downloads reach private, loopback and link-local
    #: addresses (``fluxnb serve --allow-private-fetch``, a lab that needs it); default: public only
    allow_private_fetch: bool = False
    #: let downloads reach 127/8 and ``::1`` only (the embedded laptop server of
    #: ``fluxnb.connect()``: only its owner can reach it, so it also keeps detailed fetch errors)
    fetch_allow_loopback: bool = False
    max_results: int = 1000
    keepalive_interval: float = 15.0
    #: a class roster CSV (``name,role,token``): each token is a person (see ``server.auth``)
    roster: str | None = None
    # -- the class server (issue 11); each is a ``fluxnb serve`` flag of the same name ------------
    #: jobs one person may have waiting (``--max-queued``); None: 4 with a roster, else no limit
    max_queued: int | None = None
    #: jobs waiting on the whole server (``--max-queue``); more answer 429
    max_queue: int = 2000
    #: pixels (width x height x num_images) of the jobs waiting or running on the whole server;
    #: a job that would pass it answers 429 (the quota's cap, ``fluxnb.server.quota``)
    max_queued_pixels: int = 400_000_000
    #: megapixels x images one person may ask for per server session (``--budget-mp``)
    budget_mp: float | None = None
    #: US dollars one person may spend behind the fal gateway (``--budget-usd``)
    budget_usd: float | None = None
    #: a file of words or phrases (one a line) a prompt may not contain (``--blocklist``)
    blocklist: str | None = None
    #: where jobs, usage and results survive a restart (``--state-dir``; SQLite + files); None:
    #: a per-server folder under the user's data dir with a roster, else in memory
    state_dir: str | None = None
    #: seconds a finished result stays fetchable (``--keep-results``, default 1 hour like fal)
    keep_results: float = 3600.0
    #: the most bytes of result files kept; the oldest go first (``--max-result-bytes``)
    max_result_bytes: int = 2 * 1024 * _MIB
    #: one engine replica per device, all fed by the one queue (``--devices cuda:0,cuda:1``)
    devices: tuple[str, ...] = ()
    #: the only folder ``loras[].path`` may name files in (``--lora-dir``)
    lora_dir: str | None = None
    #: let ``loras[].path`` name Hugging Face hub repos (``--allow-hub-loras``)
    allow_hub_loras: bool = False
    #: the fal gateway's upstream queue (``--upstream``; default https://queue.fal.run)
    upstream: str | None = None
    #: the fal gateway's own key (``$FAL_KEY`` or ``--fal-key-file``); never shown to anyone
    fal_key: str | None = field(default=None, repr=False)
    #: seconds a client has to send a request's headers, then its body (slowloris)
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    #: open connections one client address may hold at once
    max_connections_per_address: int = 128

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, not {self.workers}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, not {self.port}")
        if self.max_results < 1:
            raise ValueError(f"max_results must be >= 1, not {self.max_results}")
        if self.keepalive_interval <= 0:
            raise ValueError("keepalive_interval must be > 0")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile must be given together")
        if self.key is not None and self.roster is not None:
            raise ValueError("give a key or a roster, not both")
        if self.max_queued is not None and self.max_queued < 1:
            raise ValueError(f"max_queued must be >= 1, not {self.max_queued}")
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, not {self.max_queue}")
        if self.max_queued_pixels < 1:
            raise ValueError(f"max_queued_pixels must be >= 1, not {self.max_queued_pixels}")
        for name in ("budget_mp", "budget_usd"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, not {value}")
        if not 0 < self.keep_results <= 30 * 86400:
            raise ValueError(f"keep_results must be in (0, 30 days], not {self.keep_results} s")
        for name in ("header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_connections_per_address < 1:
            raise ValueError("max_connections_per_address must be >= 1")
        self.app_ids = tuple(self.app_ids)
        self.devices = tuple(self.devices)

    @property
    def queued_limit(self) -> int | None:
        """Jobs one person may have waiting: ``max_queued``, else 4 with a roster, else None."""
        if self.max_queued is not None:
            return self.max_queued
        return 4 if self.roster is not None else None

    @property
    def scheme(self) -> str:
        """``https`` when TLS is configured, else ``http``."""
        return "https" if self.certfile else "http"
