"""The usage examples in the docstrings of the pure modules run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["fluxnb.schema", "fluxnb.protocol", "fluxnb.datauri", "fluxnb.images", "fluxnb.errors",
           "fluxnb.figures",
           "fluxnb.server.runner",
           "fluxnb.demo", "fluxnb.server.engines",
           "fluxnb.masks", "fluxnb.display", "fluxnb.widgets.painter", "fluxnb.widgets.history",
           "fluxnb.widgets.panel_model", "fluxnb.server.engines.flux_support",
           "fluxnb.sweeps.axes", "fluxnb.sweeps.plan", "fluxnb.sweeps.cache", "fluxnb.sweeps.log",
           "fluxnb.sweeps.metrics", "fluxnb.sweeps.core", "fluxnb.sweeps.sheets"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
