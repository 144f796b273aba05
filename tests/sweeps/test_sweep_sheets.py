"""Metrics, contact sheets and metric plots of a sweep, and the PNG's embedded parameters."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb.client import QueueClient
from fluxnb.server import BackgroundServer
from fluxnb.sweeps import Sweep, inpaint_metrics
from tests.sweep_support import small_inputs

Factory = Callable[..., BackgroundServer]


def test_metrics_inside_and_outside_the_mask() -> None:
    before = np.full((20, 20, 3), 100, np.uint8)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 255
    after = before.copy()
    after[5:15, 5:15] = 160                       # repainted: +60 inside
    after[0, :] = 110                             # a small leak outside: +10 on one row
    m = inpaint_metrics(Image.fromarray(before), Image.fromarray(mask), Image.fromarray(after))
    assert m["change_in_mask"] == pytest.approx(60.0)
    assert m["mad_outside"] == pytest.approx(10 * 20 / 300, abs=1e-4)
    assert m["psnr_outside"] == pytest.approx(10 * math.log10(255**2 / (100 * 20 / 300)), abs=1e-3)
    same = inpaint_metrics(Image.fromarray(before), Image.fromarray(mask), Image.fromarray(before))
    assert same == {"change_in_mask": 0.0, "mad_outside": 0.0, "psnr_outside": 100.0}
    bigger = Image.fromarray(before).resize((40, 40))   # before/mask follow the output's size
    assert inpaint_metrics(Image.fromarray(before), Image.fromarray(mask), bigger)["mad_outside"] < 1


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """steps x strength on the preview engine, with one column of cells that fail."""
    from fluxnb.server import ServerConfig

    folder = tmp_path_factory.mktemp("sheet")
    with BackgroundServer(ServerConfig(engine="preview", workers=2, port=0)) as server:
        inputs = small_inputs()
        broken = f"{server.base_url}/_fluxnb/files/nope/x.png"
        with QueueClient(server.base_url, max_retries=0) as client:
            return fluxnb.sweep(client, inputs, folder, steps=[2, 4, 6], strength=[0.3, 1.0],
                                mask=[inputs["mask_url"], broken], cache=False, progress=None,
                                verbose=False, seeds=3)


def test_preview_metrics_follow_strength(swept: Sweep) -> None:
    ok = swept.frame[swept.frame["status"] == "ok"]
    assert len(ok) == 6 and len(swept.failed) == 6
    by_strength = ok.groupby("strength")["change_in_mask"].mean()
    assert by_strength[1.0] > by_strength[0.3]           # more strength, more change in the mask
    assert (ok["change_in_mask"] > ok["mad_outside"]).all()


def test_contact_sheet_labels_blanks_and_png_chunks(swept: Sweep, tmp_path: Path) -> None:
    sheet = swept.contact_sheet(x="steps", y="strength", where={"mask": swept.axes["mask_url"][0]})
    fig = sheet.figure
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["before", "mask"]
    assert {"steps=2", "steps=4", "steps=6"} <= set(titles)
    assert {ax.get_ylabel() for ax in fig.axes} >= {"strength=0.3", "strength=1"}
    assert "num_inference_steps \u00d7 strength" in fig.get_suptitle()
    assert len(fig.axes) == 9 and sum(len(ax.images) for ax in fig.axes) == 8   # before, mask, 6 cells
    path = sheet.save(tmp_path / "sheet.png")
    with Image.open(path) as img:
        text = {k: str(v) for k, v in img.info.items() if isinstance(v, str)}
        assert img.size[0] > 400
    meta = json.loads(text["fluxnb-sweep"])
    assert meta["axes"]["num_inference_steps"] == [2, 4, 6]
    assert meta["x"] == "num_inference_steps" and meta["y"] == "strength"
    assert set(meta["seeds"].values()) == {3}
    assert "strength" in text["parameters"]

    failing = swept.contact_sheet(x="steps", y="strength", where={"mask": swept.axes["mask_url"][1]})
    marks = [t.get_text() for ax in failing.figure.axes for t in ax.texts]
    assert marks.count("\u2717 failed") == 6
    assert sum(len(ax.images) for ax in failing.figure.axes) == 2          # only before and mask
    assert failing.png_bytes().startswith(b"\x89PNG")


def test_metric_plot_has_one_line_per_hue(swept: Sweep) -> None:
    plot = swept.plot("change_in_mask", x="steps", hue="strength")
    ax = plot.figure.axes[0]
    assert len(ax.lines) == 2 and ax.get_xlabel() == "num_inference_steps"
    assert [float(v) for v in np.asarray(ax.lines[0].get_xdata())] == [2, 4, 6]
    assert plot._repr_png_().startswith(b"\x89PNG")
    with pytest.raises(KeyError):
        swept.plot("no_such_metric")


def test_loaded_sweep_draws_the_same(swept: Sweep) -> None:
    again = Sweep.load(swept.folder)
    assert again.frame.drop(columns=["finished_at"]).equals(swept.frame.drop(columns=["finished_at"]))
    assert "6 ok" in repr(again) and "<table" in again._repr_html_()


def test_contact_sheet_can_zoom_to_the_mask(swept: Sweep) -> None:
    from fluxnb.sweeps.sheets import crop_box

    mask_label = swept.axes["mask_url"][0]
    mask = Image.open(next((swept.folder / "inputs").glob(mask_label.split(":", 1)[1][:12] + "*")))
    box = crop_box(mask.convert("L"))
    assert box is not None
    width, height = box[2] - box[0], box[3] - box[1]
    assert (width, height) != mask.size                       # a real zoom, not the whole picture
    whole = swept.contact_sheet(x="steps", y="strength", where={"mask": mask_label})
    zoomed = swept.contact_sheet(x="steps", y="strength", where={"mask": mask_label}, crop=True)
    shapes = {ax.images[0].get_array().shape[:2] for ax in zoomed.figure.axes if ax.images}
    assert shapes == {(height, width)}                       # before, mask and every output
    assert {ax.images[0].get_array().shape[:2] for ax in whole.figure.axes if ax.images} == {
        (mask.height, mask.width)}
    assert zoomed.metadata["crop"] == list(box) and whole.metadata["crop"] is None
