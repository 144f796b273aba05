"""The usage examples in the docstrings of every fluxnb module run as written.

The modules are discovered (``pkgutil.walk_packages``), not listed by hand: every module whose
source holds a ``>>>`` example is collected. A module whose import needs an optional extra that is
not installed (torch, diffusers, ...: the ``diffusers`` extra) is skipped, saying which; any other
import error fails.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import fluxnb

#: top-level modules of the optional ``diffusers`` extra; a module needing one of these is skipped
#: when it is missing (a ``[dev]``-only install)
OPTIONAL_IMPORTS = frozenset({"torch", "diffusers", "transformers", "peft", "accelerate", "safetensors",
                              "huggingface_hub"})
#: ``python -m fluxnb`` runs the CLI on import: never imported here (it has no examples)
NOT_IMPORTED = frozenset({"fluxnb.__main__"})


def _modules_with_examples() -> list[str]:
    names = ["fluxnb"]
    names += [info.name for info in pkgutil.walk_packages(fluxnb.__path__, "fluxnb.")]
    found = []
    for name in names:
        if name in NOT_IMPORTED:
            continue
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        if ">>>" in Path(spec.origin).read_text(encoding="utf-8"):
            found.append(name)
    return sorted(found)


MODULES = _modules_with_examples()


def test_discovery_finds_the_modules_that_were_once_missed() -> None:
    # these were missing from the old hand-written list; the package has dozens of such modules
    assert {"fluxnb.client", "fluxnb.server.jobs", "fluxnb.server.app", "fluxnb.sse",
            "fluxnb.sweeps.runner", "fluxnb.widgets.panel", "fluxnb.masks"} <= set(MODULES)
    assert len(MODULES) >= 30


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in OPTIONAL_IMPORTS:
            raise
        pytest.skip(f"{name} needs {missing}, from the optional diffusers extra (not installed)")
    examples = [ex for test in doctest.DocTestFinder().find(module) for ex in test.examples]
    assert examples, f"{name} has '>>>' in its source but no docstring examples"
    if all(ex.options.get(doctest.SKIP) for ex in examples):
        pytest.skip(f"{name}: every example is marked +SKIP (they need a kernel, an event loop "
                    "or a running job)")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
