"""The usage examples in the docstrings of the pure modules run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["fluxnb.schema", "fluxnb.protocol", "fluxnb.datauri", "fluxnb.errors", "fluxnb.figures",
           "fluxnb.server.runner",
           "fluxnb.demo", "fluxnb.server.engines",
           "fluxnb.masks", "fluxnb.display", "fluxnb.widgets.painter", "fluxnb.widgets.history",
           "fluxnb.widgets.panel_model", "fluxnb.server.engines.flux_support"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
