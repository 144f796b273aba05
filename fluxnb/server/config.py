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
        self.app_ids = tuple(self.app_ids)

    @property
    def scheme(self) -> str:
        """``https`` when TLS is configured, else ``http``."""
        return "https" if self.certfile else "http"
