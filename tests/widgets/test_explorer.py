"""``Sweep.explore()`` headless: the widget state of :class:`SweepExplorer` over real sweeps on the
preview engine (one with failing cells), a sweep followed while it runs, and a moved run folder."""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb.client import QueueClient
from fluxnb.server import BackgroundServer, ServerConfig
from fluxnb.sweeps import Sweep
from fluxnb.widgets.explorer import SweepExplorer
from fluxnb.widgets.swipe import SwipeView
from tests.support import eventually
from tests.sweep_support import small_inputs


@pytest.fixture(scope="module")
def server() -> Any:
    with BackgroundServer(ServerConfig(engine="preview", workers=2, port=0)) as srv:
        yield srv


@pytest.fixture(scope="module")
def swept(server: BackgroundServer, tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """steps x strength x mask on the preview engine; the second mask is a URL that fails."""
    inputs = small_inputs()
    broken = f"{server.base_url}/_fluxnb/files/nope/x.png"
    with QueueClient(server.base_url, max_retries=0) as client:
        return fluxnb.sweep(client, inputs, tmp_path_factory.mktemp("explore"), steps=[2, 4, 6],
                            strength=[0.3, 1.0], mask=[inputs["mask_url"], broken], cache=False,
                            progress=None, verbose=False, seeds=3)


def _row(sweep: Sweep, **values: Any) -> dict[str, Any]:
    frame = sweep.frame
    for name, value in values.items():
        frame = frame[frame[sweep.column(name)] == value]
    assert len(frame) == 1, values
    return dict(frame.iloc[0])


def _pixels(data: bytes | Image.Image) -> np.ndarray:
    img = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_one_control_per_axis(swept: Sweep) -> None:
    ex = swept.explore()
    assert list(ex.controls) == ["num_inference_steps", "strength", "mask_url"]
    steps, strength, mask = ex.controls.values()
    assert isinstance(steps, W.SelectionSlider) and list(steps.options) == [("2", 2), ("4", 4), ("6", 6)]
    assert isinstance(strength, W.SelectionSlider) and [v for _l, v in strength.options] == [0.3, 1.0]
    assert isinstance(mask, W.ToggleButtons) and len(mask.options) == 2     # an image axis
    assert isinstance(ex.swipe, SwipeView) and ex.swipe in ex.widget.children
    assert not ex.watching                    # every cell has a row: nothing to wait for
    assert "12/12 cells" in repr(ex)


def test_selecting_a_cell_shows_its_row(swept: Sweep) -> None:
    ex = SweepExplorer(swept)
    good = swept.axes["mask_url"][0]
    for steps, strength in [(2, 0.3), (6, 1.0), (4, 0.3)]:
        shown = ex.select(steps=steps, strength=strength, mask=good)
        row = _row(swept, steps=steps, strength=strength, mask_url=good)
        assert shown is not None and shown["cell"] == row["cell"] and shown["status"] == "ok"
        assert f"steps={steps}, strength={strength:g}" in ex.info.value
        assert row["request_id"] in ex.info.value and "status: ok" in ex.info.value
        assert f"change_in_mask {row['change_in_mask']:.3g}" in ex.info.value
        assert ex.swipe.labels == ("input", "output")
        after = ex.swipe._shown[1]          # the output as sent: the saved file (JPEG-close)
        assert np.abs(_pixels(after) - _pixels(Image.open(row["file"]))).mean() < 6
    ex.step("steps", -1)                    # an arrow key's step: 4 -> 2, then clamped
    ex.step("steps", -5)
    assert ex.selected is not None and ex.selected["num_inference_steps"] == 2
    with pytest.raises(ValueError, match=r"steps=5 is not on the axis; its values: \[2, 4, 6\]"):
        ex.select(steps=5)


def test_a_failed_cell_shows_its_error(swept: Sweep) -> None:
    ex = swept.explore()
    ex.select(steps=4, strength=1.0, mask=swept.axes["mask_url"][1])
    assert ex.selected is not None and ex.selected["status"] == "error"
    assert "status: error" in ex.info.value and "fluxnb-error" in ex.info.value
    assert "could not fetch this URL" in ex.info.value
    assert ex.swipe.labels == ("input", "error")


def test_compare_with_pins_a_cell(swept: Sweep) -> None:
    ex = swept.explore()
    good = swept.axes["mask_url"][0]
    pinned = ex.select(steps=2, strength=1.0, mask=good)
    ex.compare_button.value = True          # the "compare with" button
    assert ex.pinned == pinned and ex.compare_button.description == "stop comparing"
    ex.select(steps=6)
    assert ex.swipe.labels == ("steps=2", "steps=6")
    assert ex.selected is not None and ex.selected["cell"] != pinned["cell"]
    assert "comparing with: steps=2, strength=1" in ex.info.value
    before = ex.images.output(pinned)
    assert before is not None and (_pixels(ex.swipe._shown[0]) == _pixels(before)).all()
    ex.unpin()
    assert ex.pinned is None and ex.swipe.labels == ("input", "output")


def test_images_go_at_display_size_and_are_cached(swept: Sweep) -> None:
    ex = swept.explore(width=32)              # the inputs are 64 x 48
    assert ex.swipe.display_size == (32, 24)
    misses = ex.images.misses
    for _ in range(3):
        ex.step("steps", 1)
        ex.step("steps", -1)
    assert ex.images.misses <= misses + 4 and ex.images.hits > 0     # each cell encoded once


def test_rows_appear_as_the_sweep_runs(server: BackgroundServer, tmp_path: Path) -> None:
    """An explorer made on the folder before the sweep, fed by its ``progress=`` callback."""
    ex = Sweep.load(tmp_path / "live").explore(watch=False)     # nothing there yet
    assert ex.controls == {} and ex.selected is None
    seen: list[int] = []

    def progress(done: int, total: int, row: Any) -> None:
        ex.progress(done, total, row)
        seen.append(sum(ex._index.get({"num_inference_steps": s}) is not None for s in (2, 3, 4)))

    with QueueClient(server.base_url) as client:
        fluxnb.sweep(client, small_inputs(), tmp_path / "live", steps=[2, 3, 4], concurrency=1,
                     cache=False, progress=progress, verbose=False)
    assert seen == [0, 1, 2, 3]               # the plan first (controls), then one row at a time
    assert list(ex.controls) == ["num_inference_steps"]
    ex.select(steps=3)
    assert ex.selected is not None and ex.selected["status"] == "ok"


def test_watch_follows_a_running_sweep(tmp_path: Path) -> None:
    folder = tmp_path / "watched"
    with BackgroundServer(ServerConfig(engine="null", engine_options={"delay": 0.3}, port=0)) as slow:
        with QueueClient(slow.base_url) as client:
            run = threading.Thread(target=fluxnb.sweep, args=(client, small_inputs(), folder),
                                   kwargs={"steps": [1, 2, 3, 4], "concurrency": 1, "cache": False,
                                           "progress": None, "verbose": False})
            run.start()
            try:
                eventually(lambda: (folder / "sweep.json").is_file(), 20, interval=0.02)
                ex = Sweep.load(folder).explore(watch=None)    # not finished: it watches
                ex.select(steps=4)
                eventually(lambda: "4/4 cells" in ex.progress_text.value, 30, interval=0.05)
                assert ex.selected is not None and ex.selected["status"] == "ok"
                eventually(lambda: not ex.watching, 10, interval=0.05)     # it stops by itself
            finally:
                run.join(60)
    ex.close()


def test_load_from_a_moved_folder(swept: Sweep, tmp_path: Path) -> None:
    """Images are read from the run folder itself: a copy elsewhere still shows them."""
    small = tmp_path / "small"
    with BackgroundServer(ServerConfig(engine="preview", port=0)) as srv, \
            QueueClient(srv.base_url) as client:
        fluxnb.sweep(client, small_inputs(), small, strength=[0.4, 0.9], cache=False, progress=None,
                     verbose=False)
    moved = tmp_path / "moved"
    shutil.copytree(small, moved)
    shutil.rmtree(small)
    ex = Sweep.load(str(moved)).explore()
    ex.select(strength=0.9)
    assert ex.selected is not None and ex.selected["status"] == "ok"
    out = moved / "images" / Path(str(ex.selected["file"])).name
    assert np.abs(_pixels(ex.swipe._shown[1]) - _pixels(Image.open(out))).mean() < 6
    before = next((moved / "inputs").glob(f"{str(ex.selected['image_url'])[7:19]}*"))
    assert np.abs(_pixels(ex.swipe._shown[0]) - _pixels(Image.open(before))).mean() < 6
