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
    """Build the engine called ``name`` (a registered name or ``module:Factory``) with ``options``.

    ``paste_back`` and ``paste_back_feather`` are the server's, for every engine (see
    :attr:`Engine.paste_back`); the factory never sees them.
    """
    options = dict(options)
    paste_back = _bool_option("paste_back", options.pop("paste_back", True))
    feather = _feather_option(options.pop("paste_back_feather", None))
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
    engine.paste_back, engine.paste_back_feather = paste_back, feather
    return engine


def _bool_option(name: str, value: Any) -> bool:
    """An on/off engine option: a bool, or true/false/yes/no/on/off/1/0 as text."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"engine option {name} must be true or false, not {value!r}")


def _feather_option(value: Any) -> int | None:
    """``paste_back_feather``: None (automatic) or a whole number of px, 0 to 512."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 512:
        raise ValueError(f"engine option paste_back_feather must be a whole number of px from 0 "
                         f"to 512 (or auto), not {value!r}")
    return value
