"""The panel in a real browser: JupyterLab on loopback, Debian's Chromium driven by playwright.

Opens a copy of ``notebooks/02_panel.ipynb``, runs all cells, moves the steps slider with the
keyboard, clicks Run, waits for the result image in the panel and checks the request the server
got; then starts a slow job in a second panel and clicks Cancel, and checks the server cancelled
it. Screenshots go to ``test-artifacts/browser/`` (gitignored) for a human to look at.

Skipped when Chromium/playwright/JupyterLab are missing, unless ``FLUXNB_REQUIRE_BROWSER=1``.
``FLUXNB_BROWSER_KERNEL=<kernelspec>`` runs the notebook on another kernel (e.g. ipykernel 6).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from fluxnb.server import BackgroundServer, ServerConfig
from tests.browser_support import KERNEL_EVAL, KERNEL_IDLE, open_notebook, require_browser
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "02_panel.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "browser"

pytestmark = pytest.mark.slow

# fire and forget: evaluate() would otherwise wait for every cell to finish
RUN_ALL = "() => { window.jupyterapp.shell.collapseLeft(); " \
          "window.jupyterapp.commands.execute('notebook:run-all-cells'); }"


# For each slider readout of a panel: its box, its slider column's box, and whether a click at
# its centre would land on it (false when it is clipped by a squeezed column or covered).
READOUTS = """(panel) => Array.from(panel.querySelectorAll('.fluxnb-sliders .widget-readout')).map((r) => {
  const b = r.getBoundingClientRect();
  const col = r.closest('.fluxnb-sliders').getBoundingClientRect();
  const hit = document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2);
  return {text: r.textContent, x: b.x, y: b.y, w: b.width, h: b.height, right: b.right,
          col_right: col.right, on_top: !!hit && (hit === r || r.contains(hit))};
})"""
SHOW_FILE_BROWSER = "() => window.jupyterapp.shell.activateById('filebrowser')"


def wait_for_kernel_value(page: Any, code: str, expected: str, timeout: float = 15.0) -> None:
    """Ask the kernel until ``code`` evaluates to ``expected`` (each ask flushes held updates).

    ipywidgets throttles a model's updates (one in flight, the rest held until the kernel is
    idle), so a value the browser shows may not have reached the kernel yet: ask the kernel."""
    seen: list[str] = []

    def matches() -> bool:
        seen.append(page.evaluate(KERNEL_EVAL, code))
        return seen[-1] == expected

    eventually(matches, timeout, lambda: f"{code} is {seen[-1]!r} in the kernel, not {expected!r}",
               interval=0)


def check_layout(page: Any, panel: Any, width: int) -> None:
    """At ``width`` x 768 (JupyterLab's file browser open, as after a fresh start) the four
    slider readouts are visible inside the panel and the seed toggle is on one line."""
    page.set_viewport_size({"width": width, "height": 768})
    page.evaluate(SHOW_FILE_BROWSER)
    panel.locator(".fluxnb-sliders").scroll_into_view_if_needed()
    page.wait_for_function("(el) => el.getBoundingClientRect().width > 0",
                           arg=panel.element_handle())
    box = panel.bounding_box()
    assert box is not None and box["width"] < width - 250, box        # the file browser is open
    readouts = page.evaluate(READOUTS, panel.element_handle())
    assert [r["text"] for r in readouts] == ["12", "3.50", "0.85", "1"], readouts
    for r in readouts:
        assert r["w"] > 20 and r["h"] > 10, (width, r)
        assert box["x"] <= r["x"] and r["right"] <= box["x"] + box["width"], (width, r, box)
        assert r["right"] <= r["col_right"] + 0.5 and r["on_top"], (width, r)   # not clipped
    toggle = panel.locator(".fluxnb-seed-mode button")
    tops = [toggle.nth(i).bounding_box()["y"] for i in range(toggle.count())]   # type: ignore[index]
    assert len(tops) == 2 and abs(tops[0] - tops[1]) < 1, (width, tops)        # one line
    panel.screenshot(path=str(ARTIFACTS / f"panel-{width}.png"))
    page.screenshot(path=str(ARTIFACTS / f"lab-{width}.png"))


@pytest.fixture
def servers() -> Iterator[tuple[BackgroundServer, BackgroundServer]]:
    """The preview engine for the result; the null engine at 6 s per job for Cancel."""
    fast = BackgroundServer(ServerConfig(engine="preview", workers=1, port=0)).start()
    slow = BackgroundServer(ServerConfig(engine="null", engine_options={"delay": 6.0}, workers=1,
                                         port=0)).start()
    yield fast, slow
    fast.stop()
    slow.stop()


def prepare_notebook(folder: Path, fast_url: str, slow_url: str) -> str:
    """A copy of 02_panel.ipynb that talks to the test servers and does not run jobs by itself,
    plus one test-only cell: a second panel on the slow server, for Cancel."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(
        f"BASE_URL = {fast_url!r}\nAUTO_RUN = False  # injected by the browser test"))
    nb.cells.append(nbformat.v4.new_code_cell(
        f"slow = fluxnb.InpaintPanel(fluxnb.connect({slow_url!r}, asynchronous=True), image=image,\n"
        "                            mask=mask, seed=SEED, prompt='a job to cancel')\nslow"))
    kernel = os.environ.get("FLUXNB_BROWSER_KERNEL")   # e.g. a kernelspec with ipykernel 6
    if kernel:
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nbformat.write(nb, folder / NOTEBOOK.name)
    return NOTEBOOK.name


def test_panel_in_jupyterlab_runs_and_cancels(servers: tuple[BackgroundServer, BackgroundServer],
                                              tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import expect

    fast, slow = servers
    t_start = time.monotonic()
    root = tmp_path / "root"
    root.mkdir()
    name = prepare_notebook(root, fast.base_url, slow.base_url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open_notebook(root, tmp_path, name, failure_shot=ARTIFACTS / "failure.png") as page:
        page.evaluate(RUN_ALL)
        panels = page.locator(".fluxnb-panel")
        expect(panels).to_have_count(3, timeout=45_000)    # panel, painted, slow
        page.wait_for_function(KERNEL_IDLE)                  # every cell has run
        panel = panels.first
        # -- the layout at 1024 and 1280 px, and the inputs shown before the first Run
        for width in (1024, 1280):
            check_layout(page, panel, width)
        preview = panel.locator("img.fluxnb-input-preview")
        expect(preview).to_be_visible()
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                               arg=preview.element_handle())
        expect(panel.locator(".fluxnb-inputs-info")).to_contain_text("512x600")
        page.set_viewport_size({"width": 1280, "height": 1400})
        page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
        panel.scroll_into_view_if_needed()

        # -- move the steps slider with the keyboard: 12 -> 15
        steps = panel.locator(".widget-slider").first
        expect(steps.locator(".widget-readout")).to_have_text("12")
        handle = steps.locator(".noUi-handle")
        handle.focus()
        for _ in range(3):
            handle.press("ArrowRight")
        expect(steps.locator(".widget-readout")).to_have_text("15")
        wait_for_kernel_value(page, "panel.steps.value", "15")

        # -- Run: the result image appears in the panel
        panel.locator("button", has_text="Run").click()
        result = panel.locator("img.fluxnb-result-image")
        expect(result).to_be_visible(timeout=30_000)
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                               arg=result.element_handle())
        status = panel.locator(".widget-html-content", has_text="status:").first
        expect(status).to_contain_text("done in")
        request_id = re.search(r"request ([0-9a-f-]{36})", status.inner_text())
        assert request_id, status.inner_text()
        job = fast.service.get(request_id.group(1))
        assert job is not None and job.ok
        assert job.params["num_inference_steps"] == 15       # the slider move reached the server
        assert job.params["seed"] == 42
        expect(panel.locator(".fluxnb-error")).to_have_count(0)
        expect(panel.locator(".fluxnb-caption")).to_contain_text("steps=15")   # HTML text
        panel.screenshot(path=str(ARTIFACTS / "panel-result.png"))

        # -- paint on the mask painter with the mouse: the stroke reaches Python
        painter = page.locator(".jp-OutputArea-output", has_text="will be repainted").first
        painter.scroll_into_view_if_needed()
        expect(painter).to_contain_text("2 strokes")          # painted from code
        box = painter.locator("canvas").last.bounding_box()
        assert box is not None and box["width"] > 100
        page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.3 * box["height"])
        page.mouse.down()
        for i in range(1, 11):
            page.mouse.move(box["x"] + (0.2 + 0.05 * i) * box["width"],
                            box["y"] + 0.3 * box["height"])
        page.mouse.up()
        expect(painter).to_contain_text("3 strokes")
        page.wait_for_timeout(300)       # let the canvas draw the redrawn mask layer
        painter.screenshot(path=str(ARTIFACTS / "painter.png"))

        # -- Cancel a running job in the panel on the slow server
        slow_panel = panels.last
        slow_panel.scroll_into_view_if_needed()
        slow_status = slow_panel.locator(".widget-html-content", has_text="status:").first
        slow_panel.locator("button", has_text="Run").click()
        expect(slow_status).to_contain_text("running", timeout=20_000)
        slow_panel.locator("button", has_text="Cancel").click()
        expect(slow_status).to_contain_text("cancelled (server: CANCELLATION_REQUESTED)",
                                            timeout=10_000)
        eventually(lambda: slow.service.stats["jobs"]["cancelled"] >= 1, 5,  # at its next step
                   interval=0.05)
        stats = slow.service.stats
        assert stats["requests"]["cancel"] == 1 and stats["jobs"]["cancelled"] == 1
        assert stats["jobs"]["completed"] == 0 and stats["running"] == 0
        slow_panel.screenshot(path=str(ARTIFACTS / "panel-cancelled.png"))

        # -- Paint mask at 1024x768: the painter opens under the inputs, on screen
        page.set_viewport_size({"width": 1024, "height": 768})
        page.evaluate(SHOW_FILE_BROWSER)
        paint = slow_panel.locator("button", has_text="Paint mask")
        paint.evaluate("(b) => b.scrollIntoView({block: 'center'})")
        paint.click()
        canvas = slow_panel.locator("canvas").last
        expect(canvas).to_be_visible()
        canvas_box, paint_box = canvas.bounding_box(), paint.bounding_box()
        run_box = slow_panel.locator("button", has_text="Run").bounding_box()
        assert canvas_box and paint_box and run_box
        assert paint_box["y"] < canvas_box["y"] < run_box["y"], (canvas_box, run_box)
        assert canvas_box["y"] < 768 - 100, canvas_box      # starts on screen, no scrolling
        page.wait_for_timeout(300)       # let the canvas draw the image
        page.screenshot(path=str(ARTIFACTS / "panel-painter-1024.png"))
        page.screenshot(path=str(ARTIFACTS / "lab-page.png"))
    print(f"browser test took {time.monotonic() - t_start:.1f} s")
