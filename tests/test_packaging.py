"""The packaging files agree with each other and with the README."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from fluxnb import schema

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_installs_the_package_on_the_required_python() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = _pyproject()["project"]
    deps = env["dependencies"]
    python_pins = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert len(python_pins) == 1
    version = python_pins[0].split("=", 1)[1]
    minimum = re.match(r">=\s*([\d.]+)", project["requires-python"]).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert pip_sections, "environment.yml must pip-install the package"
    installs = [line.replace("-e", "").strip() for line in pip_sections[0]]
    assert "." in installs or any(i.startswith(".[") for i in installs)
    # nothing installed by conda besides python and pip: the package's own deps come from pyproject
    assert {d.split("=")[0] for d in deps if isinstance(d, str)} == {"python", "pip"}


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
