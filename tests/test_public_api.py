"""The public surface: an explicit, sorted ``__all__`` whose names all resolve."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import fluxnb


def test_top_level_all_is_sorted_and_resolves() -> None:
    assert fluxnb.__all__ == sorted(fluxnb.__all__)
    for name in fluxnb.__all__:
        assert getattr(fluxnb, name) is not None, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fluxnb.nope  # noqa: B018


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(fluxnb.__path__, "fluxnb."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


@pytest.mark.parametrize("module_name", _modules())
def test_every_module_declares_all(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} has no __all__"
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name}"
