"""The package's layers, enforced: every import of every ``fluxnb`` module (function-level ones
included), read with ``ast``, goes to the module's own layer or one below it, and no two modules
import each other, however indirectly.

Layers, bottom up (a module may import its own layer and those below):

- kernel: errors, schema, fields, protocol, datauri, images, maskcheck, pictures (+ the figures
  shim), _aio, _version; imports no other layer;
- client: the ``fluxnb.client`` package (and the old top-level client modules while they are
  shims); kernel only;
- server: ``fluxnb.server``; kernel only (never the client, the widgets or the sweeps);
- surface: masks, display, ``fluxnb.widgets``, ``fluxnb.sweeps``; kernel and client (never the
  server);
- entry: ``fluxnb/__init__.py`` (its lazy table), ``__main__``, cli, _cli_output, demo, connect
  (and the ``backends`` shim); anything.

Imports under ``if TYPE_CHECKING:`` never run, so they are left out of the cycle check; they still
have to respect the layers. Imports done by name at run time (``importlib.import_module("...")``)
are invisible here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fluxnb"

KERNEL, CLIENT, SERVER, SURFACE, ENTRY = "kernel", "client", "server", "surface", "entry"

#: The layers each layer may import (its own included).
ALLOWED: Mapping[str, frozenset[str]] = {
    KERNEL: frozenset({KERNEL}),
    CLIENT: frozenset({KERNEL, CLIENT}),
    SERVER: frozenset({KERNEL, SERVER}),
    SURFACE: frozenset({KERNEL, CLIENT, SURFACE}),
    ENTRY: frozenset({KERNEL, CLIENT, SERVER, SURFACE, ENTRY}),
}

#: Module (or package: it covers its submodules) -> layer; the longest matching name wins, and
#: ``fluxnb`` itself is only ``fluxnb/__init__.py``.
LAYER_OF: Mapping[str, str] = {
    **dict.fromkeys(["fluxnb.errors", "fluxnb.schema", "fluxnb.fields", "fluxnb.protocol",
                     "fluxnb.datauri", "fluxnb.images", "fluxnb.maskcheck", "fluxnb.pictures",
                     "fluxnb.figures", "fluxnb._aio", "fluxnb._version"], KERNEL),
    "fluxnb.params_meta": KERNEL,  # parameters inside saved images (issue 12, item 5)
    **dict.fromkeys(["fluxnb.client", "fluxnb._http", "fluxnb.sse", "fluxnb.uploads",
                     "fluxnb.result"], CLIENT),
    "fluxnb.server": SERVER,
    "fluxnb.server.auth": SERVER,  # roster, people, roles: the standard library and nothing else
    "fluxnb.server.connections": SERVER,  # header/body timeouts, per-address cap (item 10)
    "fluxnb.server.guard": SERVER,  # the laptop server: own Host, JSON bodies (item 10)
    "fluxnb.server.moderation": SERVER,  # the --blocklist of prompt words (issue 11, item 6)
    "fluxnb.server.loras": SERVER,  # which loras[].path are allowed (issue 11, item 10)
    "fluxnb.server.quota": SERVER,  # quotas, budgets and their ledger (issue 11, item 4)
    "fluxnb.server.dashboard": SERVER,  # the teacher's dashboard, gallery and login (issue 11)
    "fluxnb.server.pages": SERVER,      # their HTML, script and stylesheet
    "fluxnb.server.sessions": SERVER,   # the login cookie's sessions
    "fluxnb.server.journal": SERVER,  # durable state: jobs, usage, result index in SQLite
    "fluxnb.server.durable": SERVER,  # the durable result store; where a server keeps state
    # -- JobService's parts (service.py split along its seams) --
    "fluxnb.server.views": SERVER,  # counts, status snapshots, watchers, the dashboard's views
    "fluxnb.server.restart": SERVER,  # journal wiring: noting changes, reloading, expiry
    "fluxnb.server.deadlines": SERVER,  # the queued jobs' deadline heap
    "fluxnb.server.engine_setup": SERVER,  # engine replicas per device, with their options
    # -- end JobService's parts --
    "fluxnb.server.pinned": SERVER,  # the fetch guard: checked, pinned connections (item 10)
    "fluxnb.server.engines.compose": SERVER,  # paste-back and crop-and-stitch (issue 12)
    **dict.fromkeys(["fluxnb.masks", "fluxnb.display", "fluxnb.widgets", "fluxnb.sweeps"], SURFACE),
    # -- the sweep explorer (issue 13, item 1): Sweep.explore() imports it at call time --
    "fluxnb.widgets.explorer": SURFACE,        # SweepExplorer: a control per axis, the swipe
    "fluxnb.widgets.explorer_cells": SURFACE,  # its cell index, display-size pictures, text
    # -- end the sweep explorer --
    **dict.fromkeys(["fluxnb", "fluxnb.__main__", "fluxnb.cli", "fluxnb._cli_class",
                     "fluxnb._cli_output", "fluxnb.demo",
                     "fluxnb.connect", "fluxnb.backends"], ENTRY),
    "fluxnb.client.journal": CLIENT,  # the local run journal (SQLite; issue 13, item 7)
    "fluxnb.history_journal": ENTRY,  # fluxnb.journal() and .rerun() (issue 13, item 7)
}

#: Imports against the layers that are there on purpose: (importer, imported) -> why.
EXCEPTIONS: Mapping[tuple[str, str], str] = {
    # InpaintPanel() with no client connects on its first Run, as fluxnb.connect() does: the
    # composition root is the one place that knows which backend to pick. Function-level only.
    ("fluxnb.widgets.panel_job", "fluxnb.connect"): "the panel's default client",
    # sweep(None, ...) connects the same way (function-level only)
    ("fluxnb.sweeps.runner", "fluxnb.connect"): "the sweep's default client",
    # the fal gateway (--engine fal) is a client of fal by design: it forwards jobs upstream
    # with fluxnb's own queue client rather than a second implementation of the protocol
    ("fluxnb.server.engines.fal_gateway", "fluxnb.client"): "the gateway's upstream client",
}

Graph = dict[str, set[str]]


def module_names(package: Path) -> dict[str, Path]:
    """Every module of the package under ``package`` by dotted name (``a/__init__.py`` is ``a``)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, anywhere (functions, classes, try blocks), and whether it sits
    under ``if TYPE_CHECKING:``."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, typing_only = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, typing_only
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack += [(child, True) for child in node.body]
            stack += [(child, typing_only) for child in node.orelse]
            continue
        stack += [(child, typing_only) for child in ast.iter_child_nodes(node)]


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom,
             known: Mapping[str, Path]) -> set[str]:
    """The package's modules an import statement loads (``from .x import y``: ``x.y`` when y is
    a module, else ``x``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[:len(parts) - node.level + 1]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = set()
    for name in names:
        while name and name not in known:   # import a.b.c of a module a.b: the module a.b
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def import_graphs(package: Path) -> tuple[Graph, Graph]:
    """(every import, the imports that run) as module -> the package's modules it imports."""
    known = module_names(package)
    every: Graph = {name: set() for name in known}
    running: Graph = {name: set() for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, typing_only in _imports(tree):
            targets = _targets(name, path.name == "__init__.py", node, known) - {name}
            every[name] |= targets
            if not typing_only:
                running[name] |= targets
    return every, running


def layer_of(module: str, table: Mapping[str, str] = LAYER_OF) -> str | None:
    """The layer of ``module``: its own entry, else its nearest package's (the top package's
    entry is its ``__init__`` alone, so a new top-level module has no layer until it is added)."""
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        layer = table.get(".".join(parts[:n]))
        if layer is not None:
            return layer
    return table.get(module)


def layer_violations(graph: Graph, table: Mapping[str, str] = LAYER_OF,
                     exceptions: Mapping[tuple[str, str], str] = EXCEPTIONS) -> list[str]:
    """One line per import against the layers (and per module with no layer)."""
    problems = [f"{m}: no layer (add it to LAYER_OF)" for m in graph if layer_of(m, table) is None]
    for module, targets in sorted(graph.items()):
        here = layer_of(module, table)
        for target in sorted(targets):
            there = layer_of(target, table)
            if here is None or there is None or there in ALLOWED[here]:
                continue
            if (module, target) not in exceptions:
                problems.append(f"{module} ({here}) imports {target} ({there})")
    return problems


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


# -- the package ---------------------------------------------------------------------------------

def test_every_import_respects_the_layers() -> None:
    every, _ = import_graphs(PACKAGE)
    problems = layer_violations(every)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_there_are_no_import_cycles() -> None:
    _, running = import_graphs(PACKAGE)
    found = cycles(running)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_exceptions_are_still_needed() -> None:
    """Each importer named in :data:`EXCEPTIONS` still makes one of its excepted imports, so the
    list never outgrows the code."""
    every, _ = import_graphs(PACKAGE)
    for importer in {a for a, _ in EXCEPTIONS}:
        targets = {t for a, t in EXCEPTIONS if a == importer}
        assert targets & every.get(importer, set()), f"{importer}: {sorted(targets)} are no longer needed"


# -- the checker itself --------------------------------------------------------------------------

def _fake_package(root: Path, files: Mapping[str, str]) -> Path:
    package = root / "pkg"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


FAKE_LAYERS = {"pkg": ENTRY, "pkg.core": KERNEL, "pkg.api": CLIENT, "pkg.ui": SURFACE,
               "pkg.srv": SERVER}


def test_a_function_level_back_import_is_caught(tmp_path: Path) -> None:
    package = _fake_package(tmp_path, {
        "__init__.py": "",
        "core.py": "def f():\n    from .api import g\n    return g\n",      # kernel -> client
        "api.py": "from . import core\ndef g(): ...\n",
        "ui/__init__.py": "from ..api import g\nfrom pkg.srv import h\n",   # surface -> server
        "srv.py": "from .core import f\nimport pkg.api\n",                 # server -> client
    })
    every, _ = import_graphs(package)
    assert every["pkg.core"] == {"pkg.api"} and every["pkg.ui"] == {"pkg.api", "pkg.srv"}
    problems = layer_violations(every, FAKE_LAYERS, {})
    assert problems == ["pkg.core (kernel) imports pkg.api (client)",
                        "pkg.srv (server) imports pkg.api (client)",
                        "pkg.ui (surface) imports pkg.srv (server)"]
    assert layer_violations(every, FAKE_LAYERS, {("pkg.core", "pkg.api"): "why",
                                                 ("pkg.srv", "pkg.api"): "why",
                                                 ("pkg.ui", "pkg.srv"): "why"}) == []
    assert layer_violations({"pkg.new": set()}, FAKE_LAYERS) == ["pkg.new: no layer (add it to LAYER_OF)"]


def test_a_cycle_is_caught_and_a_type_checking_import_is_no_cycle(tmp_path: Path) -> None:
    package = _fake_package(tmp_path, {
        "__init__.py": "",
        "a.py": "from .b import x\n",
        "b.py": "def x():\n    from . import c\n",
        "c.py": "import pkg.a\n",                                             # a -> b -> c -> a
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .e import y\n",
        "e.py": "from .d import z\n",
    })
    every, running = import_graphs(package)
    assert cycles(running) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert cycles(every) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.d", "pkg.e"]]
    assert cycles({"x": {"y"}, "y": set()}) == []


@pytest.mark.parametrize(("module", "layer"), [
    ("fluxnb", ENTRY), ("fluxnb.schema", KERNEL), ("fluxnb.client._sync", CLIENT),
    ("fluxnb.server.engines.null", SERVER), ("fluxnb.widgets.panel_job", SURFACE),
    ("fluxnb.sweeps.runner", SURFACE), ("fluxnb.cli", ENTRY), ("fluxnb.nowhere", None),
])
def test_layer_of(module: str, layer: str | None) -> None:
    assert layer_of(module) == layer
