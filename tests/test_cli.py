"""The ``fluxnb`` command: demo in a fresh process, run against a live server, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fluxnb.cli import build_parser, main
from fluxnb.demo import demo_inputs

from .conftest import make_test_image, make_test_mask


def _open(path: Path) -> Image.Image:
    with Image.open(path) as handle:
        return handle.copy()


@pytest.mark.slow
def test_demo_writes_outputs_and_a_before_mask_after_picture(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "fluxnb", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "embedded local server" in done.stderr and "not a generative model" in done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
    output, sheet = Path(lines["output"]), Path(lines["before/mask/after"])
    assert output.is_file() and sheet.is_file()
    image, mask = demo_inputs()
    result = _open(output).convert("RGB")
    assert result.size == image.size
    before, after = np.asarray(image, np.float32), np.asarray(result, np.float32)
    hole = np.asarray(mask) >= 128
    # the masked ribbons changed a lot, the rest of the photo barely (JPEG noise only)
    assert np.abs(after[hole] - before[hole]).mean() > 10
    far = ~np.asarray(mask.resize(mask.size).point(lambda v: 255 if v else 0)).astype(bool)
    assert np.abs(after[far] - before[far]).mean() < 3
    picture = _open(sheet)
    assert picture.width > 3 * image.width * 384 / image.height  # before, mask, after side by side
    assert (out / "demo-image.png").is_file() and (out / "demo-mask.png").is_file()


def test_run_against_a_server_writes_files(tmp_path: Path, live_server, capsys) -> None:
    image, mask = tmp_path / "in.png", tmp_path / "m.png"
    make_test_image(80, 48).save(image)
    make_test_mask(80, 48).save(mask)
    code = main(["run", "--image", str(image), "--mask", str(mask), "--prompt", "a fox",
                 "--steps", "10", "--seed", "3", "--num-images", "2", "--format", "png",
                 "--out", str(tmp_path / "out"), "--base-url", live_server.base_url])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    outputs = [Path(line.split(": ", 1)[1]) for line in captured.out.splitlines()
               if line.startswith("output: ")]
    assert len(outputs) == 2 and all(p.suffix == ".png" and p.is_file() for p in outputs)
    assert _open(outputs[0]).size == (80, 48)
    assert not np.array_equal(np.asarray(_open(outputs[0])), np.asarray(_open(outputs[1])))
    record = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert record["output"]["seed"] == 3 and record["inputs"]["num_images"] == 2
    assert record["request_id"] and record["image"] == str(image)
    assert "done" in captured.err  # the progress bar on stderr


def test_run_with_an_out_of_range_value_names_field_and_range(tmp_path: Path, live_server, capsys) -> None:
    image, mask = tmp_path / "in.png", tmp_path / "m.png"
    make_test_image().save(image)
    make_test_mask().save(mask)
    code = main(["run", "--image", str(image), "--mask", str(mask), "--prompt", "x", "--steps", "60",
                 "--out", str(tmp_path), "--base-url", live_server.base_url])
    err = capsys.readouterr().err
    assert code != 0
    assert "num_inference_steps=60" in err and "1 to 50" in err


def test_run_with_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="nope.png"):
        main(["run", "--image", str(tmp_path / "nope.png"), "--mask", "m.png", "--prompt", "x"])


def test_serve_binds_loopback_by_default() -> None:
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.engine == "preview" and args.workers == 1
