"""Many Runs in a real browser (issue 9, item 1): two panels sharing one AsyncQueueClient, Run
clicked 20 times across them, with ``await panel.arun()`` run in a notebook cell between clicks.
No error text may appear in the panels or in any cell's output (before the fix, one client used
from two event loops failed with "<asyncio.locks.Event ...> is bound to a different event loop").

A purpose-built notebook in a temp folder (small image, 2 steps, the null engine) keeps this
fast; JupyterLab on loopback and Debian's Chromium through playwright, as in
``test_browser_panel.py``. Skipped without Chromium/playwright/JupyterLab unless
``FLUXNB_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from fluxnb.server import BackgroundServer, ServerConfig
from tests.browser_support import KERNEL_EVAL, KERNEL_IDLE, open_notebook, require_browser

pytestmark = pytest.mark.slow

CLICKS = 20
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"

SETUP = '''\
import numpy as np
from PIL import Image
import fluxnb

client = fluxnb.AsyncQueueClient(BASE_URL)        # ONE client for both panels
y, x = np.mgrid[0:64, 0:96]
image = Image.fromarray(np.stack([x * 2, y * 3, x + y], axis=-1).astype(np.uint8), "RGB")
m = np.zeros((64, 96), np.uint8)
m[16:48, 32:64] = 255
mask = Image.fromarray(m, "L")
panels = [fluxnb.InpaintPanel(client, image=image, mask=mask, prompt=f"panel {i}", seed=i)
          for i in range(2)]
for p in panels:
    p.steps.value = 2
ARUNS = 0
'''
ARUN = '''\
result = await panels[ARUNS % 2].arun()
ARUNS += 1
print(f"arun {ARUNS} ok: {result.request_id}")
'''
CELLS = [SETUP, "panels[0]", "panels[1]", ARUN]
ARUN_CELL = 3

# fire and forget: evaluate() would otherwise wait for the cells to finish
RUN_ABOVE = """(k) => { window.jupyterapp.shell.collapseLeft();
  window.jupyterapp.shell.currentWidget.content.activeCellIndex = k;
  window.jupyterapp.commands.execute('notebook:run-all-above'); }"""
RUN_CELL = """(k) => { const nb = window.jupyterapp.shell.currentWidget;
  nb.content.activeCellIndex = k; window.jupyterapp.commands.execute('notebook:run-cell'); }"""
OUTPUTS = """() => JSON.stringify(window.jupyterapp.shell.currentWidget.content.widgets.map(
  (c) => c.model.type === 'code' ? c.model.outputs.toJSON() : []))"""
# the cell's output says "arun N ok", or any cell shows an error
ARUN_DONE = """([k, n]) => {
  const cells = window.jupyterapp.shell.currentWidget.content.widgets;
  const outs = cells.flatMap((c) => c.model.type === 'code' ? c.model.outputs.toJSON() : []);
  if (outs.some((o) => o.output_type === 'error')) return true;
  return JSON.stringify(cells[k].model.outputs.toJSON()).includes(`arun ${n} ok`);
}"""
# the panel finished a run other than `before` (done, with another request id), or shows an error
RUN_DONE = """([panel, before]) => {
  if (panel.querySelector('.fluxnb-error')) return true;
  const s = Array.from(panel.querySelectorAll('.widget-html-content'))
    .find((e) => e.textContent.includes('status:'));
  const text = s ? s.textContent : '';
  return text.includes('done in') && !(before && text.includes(before));
}"""
ERROR_WORDS = re.compile(r"Error|Traceback|bound to a different event loop|Exception|failed")


@pytest.fixture
def server() -> Iterator[BackgroundServer]:
    """The null engine with a short delay: each job queues, runs a moment and completes."""
    server = BackgroundServer(ServerConfig(engine="null", engine_options={"delay": 0.05},
                                           workers=2, port=0)).start()
    yield server
    server.stop()


def _notebook(folder: Path, base_url: str) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"BASE_URL = {base_url!r}\n" + CELLS[0]),
                *(nbformat.v4.new_code_cell(src) for src in CELLS[1:])]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "runs.ipynb")
    return "runs.ipynb"


def _status_request_id(panel: Any) -> str:
    text = panel.locator(".widget-html-content", has_text="status:").first.inner_text()
    found = re.search(r"request ([0-9a-f-]{36})", text)
    return found.group(1) if found else ""


def test_twenty_runs_across_two_panels_sharing_one_client(server: BackgroundServer,
                                                           tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import expect

    root = tmp_path / "root"
    root.mkdir()
    name = _notebook(root, server.base_url)
    with open_notebook(root, tmp_path, name) as page:
        page.evaluate(RUN_ABOVE, ARUN_CELL)                 # all but the arun cell
        panels = page.locator(".fluxnb-panel")
        expect(panels).to_have_count(2, timeout=45_000)
        page.wait_for_function(KERNEL_IDLE)
        aruns = 0
        for click in range(CLICKS):
            panel = panels.nth(click % 2)
            run = panel.locator("button", has_text="Run")
            expect(run).to_be_enabled()
            before = _status_request_id(panel)
            run.click()
            page.wait_for_function(RUN_DONE, arg=[panel.element_handle(), before])
            expect(panel.locator(".fluxnb-error")).to_have_count(0)
            if click % 2:                                     # await panel.arun() in a cell
                aruns += 1
                page.evaluate(RUN_CELL, ARUN_CELL)
                page.wait_for_function(ARUN_DONE, arg=[ARUN_CELL, aruns])
        outputs = json.loads(page.evaluate(OUTPUTS))
        page.screenshot(path=str(_artifacts() / "panel-runs.png"))
        errors = [o for cell in outputs for o in cell
                  if o.get("output_type") == "error" or o.get("name") == "stderr"]
        assert not errors, errors[:2]
        expect(page.locator(".fluxnb-error")).to_have_count(0)
        panel_text = " ".join(panels.nth(i).inner_text() for i in range(2))
        assert not ERROR_WORDS.search(panel_text), panel_text[-2000:]
        histories = page.evaluate(KERNEL_EVAL, "[(len(p.history), sorted(set("
                                               "p.history['status']))) for p in panels]")
        half = (CLICKS + aruns) // 2
        assert histories == f"[({half}, ['completed']), ({half}, ['completed'])]"
        assert server.service.stats["jobs"]["completed"] == CLICKS + aruns


def _artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
