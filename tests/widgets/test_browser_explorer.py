"""The sweep explorer in a real browser: JupyterLab on loopback, Debian's Chromium (playwright).

A steps x strength sweep runs on the preview engine in the test process; a notebook loads its
run folder and shows ``Sweep.load(folder).explore()``. The test clicks on the steps slider's
track, then steps it with the arrow keys from the focused handle, and checks the parameters
text, the swipe's picture and the kernel's selected cell. Screenshots go to
``test-artifacts/browser/`` (gitignored).

Skipped when Chromium/playwright/JupyterLab are missing, unless ``FLUXNB_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb.client import QueueClient
from fluxnb.server import BackgroundServer, ServerConfig
from tests.browser_support import KERNEL_IDLE, open_notebook, require_browser
from tests.widgets.test_browser_panel import RUN_ALL, wait_for_kernel_value

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"

pytestmark = pytest.mark.slow

PARAMS = ".fluxnb-explorer-params"


def _inputs() -> dict[str, Any]:
    y, x = np.mgrid[0:192, 0:256]
    rgb = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    mask = np.zeros((192, 256), np.uint8)
    mask[48:144, 64:192] = 255
    return {"prompt": "a test", "image_url": Image.fromarray(rgb, "RGB"),
            "mask_url": Image.fromarray(mask, "L")}


def _notebook(root: Path, folder: Path) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        f"import fluxnb\nex = fluxnb.Sweep.load({str(folder)!r}).explore(width=256)\nex")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "explore.ipynb")
    return "explore.ipynb"


def _shown_src(page: Any, explorer: Any) -> str:
    return str(page.evaluate("(el) => el.querySelector('img.fluxnb-swipe-after').src",
                             explorer.element_handle()))


def test_explorer_slider_moves_with_click_and_arrow_keys(tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import expect

    folder = tmp_path / "sweep"
    with BackgroundServer(ServerConfig(engine="preview", workers=2, port=0)) as server, \
            QueueClient(server.base_url) as client:
        fluxnb.sweep(client, _inputs(), folder, steps=[2, 4, 6], strength=[0.5, 1.0], cache=False,
                     progress=None, verbose=False)
    root = tmp_path / "root"
    root.mkdir()
    name = _notebook(root, folder)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open_notebook(root, tmp_path, name, failure_shot=ARTIFACTS / "explorer-failure.png") as page:
        page.evaluate(RUN_ALL)
        explorer = page.locator(".fluxnb-explorer")
        expect(explorer).to_have_count(1, timeout=45_000)
        page.wait_for_function(KERNEL_IDLE)
        params = explorer.locator(PARAMS)
        expect(params).to_have_text("steps=2, strength=0.5")
        expect(explorer.locator(".fluxnb-swipe-label-before")).to_have_text("input")
        page.wait_for_function("(el) => { const i = el.querySelector('img.fluxnb-swipe-after');"
                               " return i && i.complete && i.naturalWidth === 256; }",
                               arg=explorer.element_handle())
        first = _shown_src(page, explorer)
        explorer.screenshot(path=str(ARTIFACTS / "explorer-steps-2.png"))

        # -- a click at the right end of the steps slider's track: steps 6
        steps = explorer.locator(".fluxnb-axis-steps")
        track = steps.locator(".noUi-target")
        box = track.bounding_box()
        assert box is not None and box["width"] > 50
        page.mouse.click(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
        expect(steps.locator(".widget-readout")).to_have_text("6")
        expect(params).to_have_text("steps=6, strength=0.5")
        wait_for_kernel_value(page, "ex.selected['num_inference_steps']", "6")

        # -- keyboard focus on the handle: ArrowLeft steps back along the axis, one value a press
        handle = steps.locator(".noUi-handle")
        handle.focus()
        handle.press("ArrowLeft")
        expect(steps.locator(".widget-readout")).to_have_text("4")
        expect(params).to_have_text("steps=4, strength=0.5")
        wait_for_kernel_value(page, "ex.selected['num_inference_steps']", "4")
        wait_for_kernel_value(page, "ex.selected['cell'] == ex._index.get("
                              "{'num_inference_steps': 4, 'strength': 0.5})['cell']", "True")
        page.wait_for_function("([el, old]) => el.querySelector('img.fluxnb-swipe-after').src !== old",
                               arg=[explorer.element_handle(), first])
        expect(explorer.locator(".fluxnb-explorer-status")).to_contain_text("status: ok")
        page.wait_for_timeout(200)          # let the new picture paint before the screenshot
        explorer.screenshot(path=str(ARTIFACTS / "explorer-steps-4.png"))
