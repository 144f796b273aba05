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
