"""The README's Python tour runs as written, against the embedded server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import make_test_image, make_test_mask

README = Path(__file__).resolve().parent.parent / "README.md"


def test_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)\n```", README.read_text(), re.S)
    assert len(blocks) >= 2
    make_test_image(120, 80).save(tmp_path / "photo.jpg")
    make_test_mask(120, 80).save(tmp_path / "mask.png")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["images"][0].size == (120, 80)
    assert namespace["result"].seed == 42
    assert "Completed" in capsys.readouterr().out  # on_update=print saw the job finish
    exec(compile(blocks[1], str(README), "exec"), namespace)  # noqa: S102
    assert namespace["result"].request_id == namespace["job"].request_id
    out = capsys.readouterr().out
    assert namespace["job"].request_id in out and "Completed" in out
    namespace["client"].close()


def test_sweep_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The "Parameter sweeps" block: 3 x 3 cells on the demo inputs, a sheet saved, a reload."""
    block = next(b for b in re.findall(r"```python\n(.*?)\n```", README.read_text(), re.S)
                 if "fluxnb.sweep(" in b)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLUXNB_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    frame = namespace["s"].frame
    assert len(frame) == 9 and set(frame["status"]) == {"ok"}
    assert sorted(set(frame["num_inference_steps"])) == [4, 8, 12]
    assert sorted(set(frame["strength"])) == [0.4, 0.7, 1.0]
    assert set(frame["seed"]) == {42}
    assert (tmp_path / "sheet.png").stat().st_size > 10_000
    assert "9 jobs" in capsys.readouterr().out             # the pre-flight line
    reloaded = namespace["fluxnb"].Sweep.load("runs/steps-x-strength")
    assert len(reloaded.frame) == 9
