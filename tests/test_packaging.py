"""The packaging files agree with each other and with the README."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from fluxnb import schema

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


#: pyproject name (with extras) -> the conda-forge package that provides it
CONDA_NAMES = {"uvicorn[standard]": "uvicorn-standard", "matplotlib": "matplotlib-base",
               "opencv-python-headless": "py-opencv"}
#: base dependencies that conda-forge lacks and environment.yml leaves to pip
PIP_ONLY: set[str] = {"pypatchmatch"}


def _conda_specs() -> dict[str, tuple[str, str]]:
    """environment.yml's conda dependencies (``name [version [build]]``): name -> (version, build)."""
    specs = {}
    for dep in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]:
        if isinstance(dep, str):
            name = re.match(r"[\w.-]+", dep).group()
            version, build = (dep[len(name):].split() + ["", ""])[:2]
            specs[name] = (version, build)
    return specs


def _pyproject_deps() -> dict[str, SpecifierSet]:
    """pyproject.toml's base dependencies: name[extras] -> version bounds."""
    deps = {}
    for line in _pyproject()["project"]["dependencies"]:
        req = Requirement(line)
        deps[req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else "")] = req.specifier
    return deps


def test_environment_yml_takes_every_dependency_from_conda_forge() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    conda = _conda_specs()
    expected = {CONDA_NAMES.get(name, name): spec for name, spec in _pyproject_deps().items()
                if name not in PIP_ONLY}
    got = {name: SpecifierSet(version) for name, (version, _) in conda.items()
           if name not in ("python", "pip")}
    assert sorted(got) == sorted(expected), "environment.yml and pyproject.toml name different packages"
    for name, spec in expected.items():   # compared as sets: ">=0.27,<1" equals "<1,>=0.27"
        assert set(got[name]) == set(spec), f"{name}: environment.yml {got[name]} != pyproject {spec}"
    assert "headless" in conda["py-opencv"][1]     # the build without Qt, as opencv-python-headless


def test_environment_yml_installs_the_package_on_the_required_python() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    version = _conda_specs()["python"][0].lstrip("=").removesuffix(".*")   # 3.11.* or =3.11
    minimum = re.match(r">=\s*([\d.]+)", _pyproject()["project"]["requires-python"]).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))
    assert "pip" in _conda_specs()
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml must pip-install the package, once"
    # pip installs the package itself and only what conda-forge lacks, never a dependency twice
    assert pip_sections[0][0] == "-e ."
    pip_only = {Requirement(line).name: Requirement(line).specifier for line in pip_sections[0][1:]}
    assert sorted(pip_only) == sorted(PIP_ONLY)
    for name, spec in pip_only.items():   # the same bounds as pyproject.toml's
        assert set(spec) == set(_pyproject_deps()[name]), f"{name}: environment.yml {spec}"


@pytest.mark.parametrize("old, new", [
    ("pillow", "pillow>=11"),                     # a bound moved in pyproject only
    ("matplotlib", "matplotlib>=3.8,<4"),         # a bound added
    ("uvicorn", "uvicorn>=0.29"),                 # the [standard] extra dropped: no longer uvicorn-standard
    ("opencv-python-headless", "opencv-python>=4.9"),   # a name without its conda mapping
    ("tqdm", "tqdm>=4.66\nrich>=13"),             # a new dependency
])
def test_the_conda_check_fails_on_a_mismatch(old: str, new: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison is not vacuous: pyproject.toml changed alone (environment.yml not) fails it."""
    project = _pyproject()["project"]
    deps = [line for d in project["dependencies"]
            for line in (new.split("\n") if Requirement(d).name == old else [d])]
    assert deps != project["dependencies"]
    monkeypatch.setattr(sys.modules[__name__], "_pyproject",
                        lambda: {"project": dict(project, dependencies=deps)})
    with pytest.raises(AssertionError):
        test_environment_yml_takes_every_dependency_from_conda_forge()


def test_extras_exist_and_dev_has_the_official_client() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"dev", "diffusers"} <= set(extras)
    assert any(dep.startswith("fal-client") for dep in extras["dev"])
    base = " ".join(_pyproject()["project"]["dependencies"])
    for needed in ("httpx", "fastapi", "uvicorn", "opencv-python-headless", "pillow", "ipywidgets"):
        assert needed in base


def test_readme_parameter_table_is_the_schema() -> None:
    text = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- schema-table -->\n(.*?)\n<!-- /schema-table -->", text, re.S).group(1)
    assert table == schema.markdown_table()


def test_ci_runs_the_readme_test_command() -> None:
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_command.py"), "test"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert "pytest" in out and ".[dev,diffusers]" in out     # the diffusers tests run in CI too
    assert "torch==2.13.0" in out.split(".[dev,diffusers]")[0]  # the CPU build first, never a CUDA pull
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_command.py test" in ci
    demo = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_command.py"), "demo"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert "fluxnb demo" in demo


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)[:2]
    assert "fluxnb demo" in first_blocks[0]
    assert "pytest" in first_blocks[1]
