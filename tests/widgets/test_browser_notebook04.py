"""``notebooks/04_explore.ipynb`` in a real browser: JupyterLab on loopback, Debian's Chromium (playwright).

Opens a copy of the notebook (on the embedded server, as a student without ``FAL_KEY`` would),
runs all cells, then in the explorer clicks the steps slider's track and checks the parameters
text and the kernel's selected cell; then drags the compare view's swipe divider with the mouse
and checks the pixels either side of it (against the view at ``position`` 1 and 0) and
``view.position`` in the kernel. One JupyterLab session. The whole page is saved to
``test-artifacts/browser/notebook04.png`` (gitignored).

Skipped when Chromium/playwright/JupyterLab are missing, unless ``FLUXNB_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from PIL import Image

from tests.browser_support import KERNEL_EVAL, KERNEL_IDLE, open_notebook, require_browser
from tests.widgets.test_browser_panel import RUN_ALL, wait_for_kernel_value

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "04_explore.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
IMAGES_LOADED = "(el) => Array.from(el.querySelectorAll('img'))" \
                ".every((i) => i.complete && i.naturalWidth > 0)"

pytestmark = pytest.mark.slow


def _prepare(folder: Path) -> str:
    """A copy of 04_explore.ipynb on the embedded server (its run folder and cache in ``folder``)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell("BASE_URL = None  # injected by the browser test"))
    kernel = os.environ.get("FLUXNB_BROWSER_KERNEL")   # e.g. a kernelspec with ipykernel 6
    if kernel:
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nbformat.write(nb, folder / NOTEBOOK.name)
    return NOTEBOOK.name


def _pixels(swipe: Any) -> np.ndarray:
    """The swipe element's screenshot as an RGB array, below the labels (its lower 70 %)."""
    shot = np.asarray(Image.open(io.BytesIO(swipe.screenshot())).convert("RGB"), dtype=np.int16)
    return shot[shot.shape[0] * 3 // 10:]


def _cols(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    w = a.shape[1]
    return a[:, int(lo * w):int(hi * w)]


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """The share of pixels that differ (by more than 24 in some channel) between ``a`` and ``b``."""
    return float((np.abs(a - b).max(axis=-1) > 24).mean())


def test_notebook04_explorer_slider_and_compare_swipe(tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import expect

    root = tmp_path / "root"
    root.mkdir()
    name = _prepare(root)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open_notebook(root, tmp_path, name, failure_shot=ARTIFACTS / "notebook04-failure.png",
                       viewport=(1280, 4400)) as page:
        page.evaluate(RUN_ALL)
        explorer = page.locator(".fluxnb-explorer")
        expect(explorer).to_have_count(1, timeout=90_000)
        swipes = page.locator(".fluxnb-swipe")
        expect(swipes).to_have_count(2, timeout=90_000)      # the explorer's and compare's
        page.wait_for_function(KERNEL_IDLE, timeout=90_000)  # every cell has run
        assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                            ).filter(has_text="Traceback").count() == 0
        assert page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']").count() == 0

        # -- the explorer: a click at the right end of the steps slider's track, steps 4 -> 8
        params = explorer.locator(".fluxnb-explorer-params")
        expect(params).to_contain_text("steps=4")
        wait_for_kernel_value(page, "explorer.selected['num_inference_steps']", "4")
        steps = explorer.locator(".fluxnb-axis-steps")
        track = steps.locator(".noUi-target")
        track.scroll_into_view_if_needed()
        box = track.bounding_box()
        assert box is not None and box["width"] > 50
        page.mouse.click(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
        expect(steps.locator(".widget-readout")).to_have_text("8")
        expect(params).to_contain_text("steps=8")
        expect(params).not_to_contain_text("steps=4")
        wait_for_kernel_value(page, "explorer.selected['num_inference_steps']", "8")
        expect(explorer.locator(".fluxnb-explorer-status")).to_contain_text("status: ok")

        # -- compare: drag the divider with the mouse from the middle to 80 %
        swipe = swipes.nth(1)
        assert swipe.evaluate("(el) => !el.closest('.fluxnb-explorer')")
        expect(swipe.locator(".fluxnb-swipe-label-before")).to_have_text("steps=4, anchor")
        expect(swipe.locator(".fluxnb-swipe-label-after")).to_have_text("steps=8, star")
        page.wait_for_function(IMAGES_LOADED, arg=swipe.element_handle())
        swipe.scroll_into_view_if_needed()
        wait_for_kernel_value(page, "round(view.position, 2)", "0.5")
        box = swipe.bounding_box()
        assert box is not None and box["width"] > 50
        start = _pixels(swipe)
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + 0.5 * box["width"], y)
        page.mouse.down()
        for i in range(1, 11):
            page.mouse.move(box["x"] + (0.5 + 0.03 * i) * box["width"], y)
        page.mouse.up()
        wait_for_kernel_value(page, "abs(view.position - 0.8) < 0.02", "True")   # the drag reached Python
        dragged = _pixels(swipe)

        # -- what is shown either side of the divider: all-before (position 1) left of it,
        # all-after (position 0) right of it; between 50 % and 80 % it changed from after to before
        page.evaluate(KERNEL_EVAL, "view.position = 1.0")
        wait_for_kernel_value(page, "view.position", "1.0")
        page.wait_for_function("(el) => el.querySelector('.fluxnb-swipe-divider').style.left === '100%'",
                               arg=swipe.element_handle())
        before = _pixels(swipe)
        page.evaluate(KERNEL_EVAL, "view.position = 0.0")
        page.wait_for_function("(el) => el.querySelector('.fluxnb-swipe-divider').style.left === '0%'",
                               arg=swipe.element_handle())
        after = _pixels(swipe)
        # (the ranges keep clear of the divider's round handle, 18 px wide)
        assert _changed(_cols(before, 0.6, 0.72), _cols(after, 0.6, 0.72)) > 0.02, \
            "the two compared images look the same between 60 % and 72 %: nothing to check"
        assert _changed(_cols(dragged, 0.02, 0.72), _cols(before, 0.02, 0.72)) < 0.005   # left: before
        assert _changed(_cols(dragged, 0.6, 0.72), _cols(after, 0.6, 0.72)) > 0.02       # not after
        assert _changed(_cols(dragged, 0.88, 0.98), _cols(after, 0.88, 0.98)) < 0.005    # right: after
        assert _changed(_cols(start, 0.6, 0.72), _cols(after, 0.6, 0.72)) < 0.005        # was after
        assert _changed(_cols(start, 0.02, 0.4), _cols(before, 0.02, 0.4)) < 0.005

        # -- the whole notebook as a student sees it, from the top, divider back at 80 %
        page.evaluate(KERNEL_EVAL, "view.position = 0.8")
        page.evaluate("() => document.querySelectorAll('.jp-WindowedPanel-outer')"
                      ".forEach((el) => { el.scrollTop = 0; })")
        page.wait_for_timeout(300)          # let the scrolled cells paint before the screenshot
        page.screenshot(path=str(ARTIFACTS / "notebook04.png"))
