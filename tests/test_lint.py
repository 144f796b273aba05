"""The package stays type-clean (mypy --strict) and lint-clean (ruff), as pyproject.toml configures."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


#: a cold mypy run (a fresh clone has no cache) on 2 busy cores can pass 300 s, pytest's default
_LIMIT = 900


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=_LIMIT)


@pytest.mark.slow
def test_ruff_is_clean() -> None:
    done = _run("ruff", "check", "fluxnb", "tests")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.timeout(_LIMIT + 30)
def test_mypy_strict_is_clean() -> None:
    done = _run("mypy", "--cache-dir", str(ROOT / ".mypy_cache"))
    assert done.returncode == 0, done.stdout + done.stderr


def _imported_top_level_modules() -> set[str]:
    names = set()
    for path in (ROOT / "fluxnb").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_mypy_passes_without_the_optional_extras() -> None:
    """On a `[dev]`-only install (no torch, no diffusers) mypy must not fail on the missing
    optional imports: each one fluxnb imports is listed with ignore_missing_imports, and fluxnb's
    own code is never exempted from the strict checks."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    optional = {Requirement(line).name.replace("-", "_")
                for line in pyproject["project"]["optional-dependencies"]["diffusers"]}
    used = optional & _imported_top_level_modules()
    assert {"torch", "diffusers"} <= used          # what the diffusers engine imports
    overrides = pyproject["tool"]["mypy"]["overrides"]
    ignored = {m for o in overrides if o.get("ignore_missing_imports") for m in o["module"]}
    assert sorted(used - ignored) == [], "add these to the ignore_missing_imports override"
    for override in overrides:
        own = [m for m in override["module"] if m.split(".")[0] == "fluxnb"]
        assert not own, f"fluxnb's own modules must stay strictly checked: {own}"
