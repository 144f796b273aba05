"""A third axis in pictures (issue 13): ``contact_sheet(x=, y=, z=)`` stacks one labelled sheet
per z value; ``save("sweep.pdf")`` writes a page per z value; bad z names are refused."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

import fluxnb
from fluxnb.client import QueueClient
from fluxnb.server import BackgroundServer, ServerConfig
from fluxnb.sweeps import Sweep
from tests.sweep_support import small_inputs


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """steps x strength x seed (2 x 2 x 3) on the preview engine."""
    folder = tmp_path_factory.mktemp("zsheet")
    with BackgroundServer(ServerConfig(engine="preview", workers=2, port=0)) as server:
        with QueueClient(server.base_url, max_retries=0) as client:
            return fluxnb.sweep(client, small_inputs(), folder, steps=[2, 4], strength=[0.5, 1.0],
                                seed=[1, 2, 3], cache=False, progress=None, verbose=False)


def _pages(pdf: bytes) -> int:
    return pdf.count(b"/Type /Page") - pdf.count(b"/Type /Pages")


def test_one_labelled_sheet_per_z_value_stacked_in_one_picture(swept: Sweep) -> None:
    assert swept.complete and len(swept.frame) == 12
    flat = swept.contact_sheet(x="steps", y="strength")
    sheet = swept.contact_sheet(x="steps", y="strength", z="seed")
    blocks = sheet.figure.subfigs
    assert [b.get_suptitle() for b in blocks] == ["seed: 1", "seed: 2", "seed: 3"]
    for block in blocks:   # every block is a labelled 2 x 2 grid (the first also has the header)
        titles = [ax.get_title() for ax in block.axes if ax.get_title()]
        assert {"steps=2", "steps=4"} <= set(titles)
        assert {"strength=0.5", "strength=1"} <= {ax.get_ylabel() for ax in block.axes}
    assert "before" in [ax.get_title() for ax in blocks[0].axes]
    assert "before" not in [ax.get_title() for ax in blocks[1].axes]
    # every block draws its own seed's outputs: the images differ between blocks
    pictures = [ax.get_images()[0].get_array() for b in blocks for ax in b.axes
                if ax.get_title() == "steps=4" and ax.get_images()]
    assert len(pictures) == 3 and (pictures[0] != pictures[1]).any()
    png = Image.open(io.BytesIO(sheet.png_bytes()))
    assert png.height > 2 * Image.open(io.BytesIO(flat.png_bytes())).height
    meta = json.loads(png.text["fluxnb-sweep"])
    assert meta["z"] == "seed" and meta["x"] == "num_inference_steps" and "seed" not in meta["where"]
    assert "seed" in png.text["parameters"]


def test_save_pdf_writes_one_page_per_z_value(swept: Sweep, tmp_path: Path) -> None:
    path = swept.contact_sheet(x="steps", y="strength", z="seed").save(tmp_path / "sweep.pdf")
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and _pages(data) == 3
    png = swept.contact_sheet(x="steps", y="strength", z="seed").save(tmp_path / "sweep.png")
    assert Image.open(png).text["Software"] == "fluxnb"
    flat = swept.contact_sheet(x="steps", y="strength").save(tmp_path / "flat.pdf")
    assert _pages(flat.read_bytes()) == 1


def test_z_names_are_checked(swept: Sweep) -> None:
    with pytest.raises(ValueError, match=r"z='nope' is not an axis.*num_inference_steps, strength, seed"):
        swept.contact_sheet(x="steps", y="strength", z="nope")
    with pytest.raises(ValueError, match="z='prompt' is not an axis"):   # a column, not an axis
        swept.contact_sheet(x="steps", y="strength", z="prompt")
    with pytest.raises(ValueError, match="already on the grid"):
        swept.contact_sheet(x="steps", y="strength", z="steps")
    with pytest.raises(ValueError, match="where= cannot also hold it"):
        swept.contact_sheet(x="steps", y="strength", z="seed", where={"seed": 1})


def test_z_alone_puts_the_other_axes_on_the_grid(swept: Sweep) -> None:
    sheet = swept.contact_sheet(z="strength")
    assert sheet.metadata["x"] == "num_inference_steps" and sheet.metadata["y"] == "seed"
    assert [b.get_suptitle() for b in sheet.figure.subfigs] == ["strength: 0.5", "strength: 1"]
