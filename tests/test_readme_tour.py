"""The README's Python tour runs as written, against the embedded server, in an empty folder:
the blocks are executed exactly as they stand (no file is made for them, no name substituted)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)\n```", README.read_text(), re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    assert list(tmp_path.iterdir()) == []          # a newcomer has no photo.jpg or mask.png
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - our own README
    demo_image, _ = namespace["fluxnb"].demo_inputs()
    assert namespace["images"][0].size == demo_image.size == (512, 600)
    assert {p.name for p in tmp_path.iterdir()} >= {"photo.jpg", "mask.png"}
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
