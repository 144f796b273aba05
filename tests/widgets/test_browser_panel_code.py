"""The panel's "code" toggle in a real browser (JupyterLab, Chromium): clicking it shows the code,
and moving the steps slider with the keyboard updates the shown code and command.

Skipped when Chromium/playwright/JupyterLab are missing, unless ``FLUXNB_REQUIRE_BROWSER=1``.
The screenshot goes to ``test-artifacts/browser/panel-code.png`` (gitignored).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tests.browser_support import KERNEL_IDLE, open_notebook, require_browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"

pytestmark = pytest.mark.slow

SETUP = """\
import fluxnb
from PIL import Image
Image.new("RGB", (64, 48), (90, 120, 200)).save("photo.png")
Image.new("L", (64, 48), 255).save("mask.png")
panel = fluxnb.InpaintPanel(None, image="photo.png", mask="mask.png", prompt="a red fox", seed=5)
panel"""


def test_the_code_toggle_shows_code_that_follows_the_slider(tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import expect

    root = tmp_path / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "code.ipynb")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open_notebook(root, tmp_path, "code.ipynb",
                       failure_shot=ARTIFACTS / "panel-code-failure.png") as page:
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        panel = page.locator(".fluxnb-panel")
        expect(panel).to_have_count(1, timeout=45_000)
        page.wait_for_function(KERNEL_IDLE)
        python = panel.locator("pre.fluxnb-code-python")
        expect(python).to_have_count(0)                    # hidden until the toggle is on
        panel.locator(".fluxnb-code-toggle").click()
        expect(python).to_contain_text("num_inference_steps=28")
        expect(python).to_contain_text("image_url='photo.png'")
        expect(python).to_contain_text("client = fluxnb.connect()")
        handle = panel.locator(".widget-slider").first.locator(".noUi-handle")
        handle.focus()
        for _ in range(2):
            handle.press("ArrowRight")
        expect(python).to_contain_text("num_inference_steps=30")
        expect(panel.locator("pre.fluxnb-code-shell")).to_contain_text("--steps 30")
        panel.locator(".fluxnb-code").screenshot(path=str(ARTIFACTS / "panel-code.png"))
        panel.locator(".fluxnb-code-toggle").click()
        expect(python).to_be_hidden()
