"""The public surface: an explicit, sorted ``__all__`` whose names all resolve, kept in step with
the lazy table and the TYPE_CHECKING imports of ``fluxnb/__init__.py``."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

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


def _type_checking_imports() -> dict[str, str]:
    """Name -> module (relative to ``fluxnb``) of every import under ``if TYPE_CHECKING:`` in
    ``fluxnb/__init__.py``."""
    tree = ast.parse(Path(fluxnb.__file__).read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.level == 1 and stmt.module, \
                    f"only `from .module import name` under TYPE_CHECKING, not {ast.unparse(stmt)}"
                found.update((alias.name, stmt.module) for alias in stmt.names)
    return found


def test_the_lazy_table_all_and_the_type_checking_imports_agree() -> None:
    """The three lists of public names in ``fluxnb/__init__.py`` name the same things: ``__all__``
    is the lazy table plus ``__version__``, and type checkers import each name from the module the
    lazy table loads it from."""
    lazy: dict[str, str] = fluxnb._LAZY
    assert set(fluxnb.__all__) == set(lazy) | {"__version__"}
    assert _type_checking_imports() == lazy


@pytest.mark.parametrize("name", sorted(fluxnb._LAZY))
def test_each_lazy_name_is_the_object_its_module_defines(name: str) -> None:
    module = importlib.import_module(f"fluxnb.{fluxnb._LAZY[name]}")
    assert getattr(fluxnb, name) is getattr(module, name)
