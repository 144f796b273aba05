"""Engine registry: built-in engines, entry points and ``module:Class`` paths.

>>> from fluxnb.server.engines import create_engine
>>> create_engine("null", delay=0).name
'null'

A package adds an engine without touching the server by declaring an entry point in the group
``fluxnb.engines`` (``name = "pkg.module:factory"``) or by calling :func:`register_engine`;
``fluxnb serve --engine pkg.module:Factory`` also works.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from typing import Any

from .base import Engine, EngineCancelled, EngineInputError, EngineOutput, EngineRequest, JobContext

__all__ = [
    "Engine",
    "EngineCancelled",
    "EngineInputError",
    "EngineOutput",
    "EngineRequest",
    "JobContext",
    "available_engines",
    "create_engine",
    "register_engine",
]

_ENTRY_POINT_GROUP = "fluxnb.engines"
_BUILTIN = {
    "preview": "fluxnb.server.engines.preview:PreviewEngine",
    "null": "fluxnb.server.engines.null:NullEngine",
    "diffusers": "fluxnb.server.engines.flux_diffusers:DiffusersEngine",
    "fal": "fluxnb.server.engines.fal_gateway:FalGatewayEngine",
}
_registry: dict[str, Callable[..., Engine]] = {}


def register_engine(name: str, factory: Callable[..., Engine]) -> None:
    """Make ``factory(**options)`` available as ``--engine name``."""
    _registry[name] = factory


def available_engines() -> list[str]:
    """Every engine name that :func:`create_engine` knows."""
    names = set(_BUILTIN) | set(_registry)
    names |= {ep.name for ep in metadata.entry_points(group=_ENTRY_POINT_GROUP)}
    return sorted(names)


def _load(path: str) -> Callable[..., Engine]:
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def create_engine(name: str, **options: Any) -> Engine:
    """Build the engine called ``name`` (a registered name or ``module:Factory``) with ``options``."""
    if name in _registry:
        factory = _registry[name]
    elif name in _BUILTIN:
        factory = _load(_BUILTIN[name])
    else:
        eps = [ep for ep in metadata.entry_points(group=_ENTRY_POINT_GROUP) if ep.name == name]
        if eps:
            factory = eps[0].load()
        elif ":" in name:
            factory = _load(name)
        else:
            raise ValueError(f"unknown engine {name!r}; available: {', '.join(available_engines())}"
                             " (or module:Factory)")
    engine = factory(**options)
    if not isinstance(engine, Engine):
        raise TypeError(f"engine factory {name!r} returned {type(engine).__name__}, not an Engine")
    return engine
