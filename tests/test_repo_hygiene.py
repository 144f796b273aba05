"""What the README's commands, the notebooks and the tests write is git-ignored.

Two checks: ``git check-ignore`` against the project's ``.gitignore`` for every known output path
(some read from the README and the notebooks' parameter cells, so a new folder there is checked
too), and the README's demo command run in a scratch repository that holds only that
``.gitignore``, after which ``git status --porcelain`` must show nothing.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GIT = shutil.which("git")

#: outputs of the README's commands, the notebooks and the test suite (relative to the root)
OUTPUTS = [
    "fluxnb-demo/before_mask_after.png",          # fluxnb demo --out fluxnb-demo
    "fluxnb-out/output_0.jpg",                    # fluxnb run without --out
    "runs/steps-x-strength/rows.jsonl",           # the README's sweep block, run from the root
    "photo.jpg", "mask.png", "sheet.png",         # the README tour's stand-in inputs and sheet
    "notebooks/runs/03_sweep/rows.jsonl",         # 03_sweep.ipynb in JupyterLab (cwd notebooks/)
    "notebooks/runs/cache/0a/0a1b.json",
    "notebooks/.ipynb_checkpoints/03_sweep-checkpoint.ipynb",
    "test-artifacts/browser/panel-result.png",    # the real-browser test's screenshots
    "test-artifacts/browser/notebook04.png",
    ".venv/bin/python", "fluxnb.egg-info/PKG-INFO", "build/lib/fluxnb/__init__.py", "dist/x.whl",
    "fluxnb/__pycache__/client.cpython-311.pyc", "tests/__pycache__/conftest.cpython-311.pyc",
    ".pytest_cache/README.md", ".hypothesis/examples/0a", ".mypy_cache/3.11/fluxnb.json",
    ".ruff_cache/CACHEDIR.TAG",
]
#: tracked files: the ignore rules must never cover these
KEPT = ["README.md", ".gitignore", "pyproject.toml", "environment.yml", "fluxnb/client.py",
        "fluxnb/demo.py", "notebooks/03_sweep.ipynb", "tests/test_repo_hygiene.py",
        "benchmarks/bench_sweep.py"]


def _need_git() -> str:
    if GIT is None:
        pytest.skip("git is not installed")
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout (an sdist?): nothing to keep clean")
    return GIT


def _ignored(paths: list[str]) -> set[str]:
    """The subset of ``paths`` that the checkout's ignore rules match (tracked or not)."""
    done = subprocess.run([_need_git(), "-C", str(ROOT), "check-ignore", "--no-index", "--stdin"],
                          input="\n".join(paths) + "\n", capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr       # 1: none of them is ignored
    return set(done.stdout.split())


def _readme_outputs() -> list[str]:
    """Files the README's shell commands write: every ``--out DIR`` and ``--json FILE``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    bash = "\n".join(re.findall(r"```bash\n(.*?)\n```", text, re.S))
    outs = [f"{d.rstrip('/')}/output_0.jpg" for d in re.findall(r"--out\s+(\S+)", bash)]
    jsons = re.findall(r"--json\s+(\S+)", bash)
    folders = [f"{d}/rows.jsonl" for d in re.findall(r"fluxnb\.sweep\(\w+, \w+, \"([^\"]+)\"", text)]
    assert outs and jsons and folders, "the README's --out / --json / sweep folder examples moved"
    return outs + jsons + folders


def _notebook_outputs() -> list[str]:
    """Relative folders in the notebooks' parameter cells (the kernel's cwd is notebooks/)."""
    found = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if "parameters" not in cell.get("metadata", {}).get("tags", []):
                continue
            for node in ast.walk(ast.parse("".join(cell["source"]))):
                value = node.value if isinstance(node, ast.Constant) else None
                if isinstance(value, str) and re.fullmatch(r"[\w.-]+(/[\w.-]+)+/?", value):
                    found.append(f"notebooks/{value.rstrip('/')}/rows.jsonl")
    assert any("03_sweep" in f for f in found), "03_sweep.ipynb's run folder is no longer a parameter"
    return found


def test_known_output_paths_are_ignored_and_sources_are_not() -> None:
    wanted = OUTPUTS + _readme_outputs() + _notebook_outputs()
    ignored = _ignored(wanted + KEPT)
    assert sorted(set(wanted) - ignored) == [], "add these to .gitignore"
    assert sorted(ignored & set(KEPT)) == [], ".gitignore covers tracked sources"


@pytest.mark.slow
def test_the_readme_demo_command_leaves_no_untracked_files(tmp_path: Path) -> None:
    git = _need_git()
    command = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_command.py"), "demo"],
                             capture_output=True, text=True, check=True).stdout.strip()
    args = shlex.split(command.split("&&")[-1])       # `.venv/bin/fluxnb demo --out fluxnb-demo`
    assert Path(args[0]).name == "fluxnb" and args[1] == "demo", command
    repo = tmp_path / "clone"
    repo.mkdir()
    subprocess.run([git, "init", "-q", str(repo)], check=True, timeout=60)
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    subprocess.run([git, "-C", str(repo), "add", ".gitignore"], check=True, timeout=60)
    subprocess.run([sys.executable, "-m", "fluxnb", *args[1:]], cwd=repo, check=True, timeout=120,
                   capture_output=True)
    written = [p for p in repo.rglob("*") if p.is_file() and ".git" not in p.relative_to(repo).parts[:1]]
    assert len(written) > 1, "the demo wrote nothing: this test proves nothing"
    status = subprocess.run([git, "-C", str(repo), "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    assert status.splitlines() == ["A  .gitignore"], f"the demo left untracked files:\n{status}"
