"""``fluxnb.compare`` in a real browser: JupyterLab on loopback, Debian's Chromium via playwright.

A notebook shows a swipe of a red ``before`` and a blue ``after``; the test drags the divider with
the mouse and checks what the page shows (pixel colours either side of the divider, from a
screenshot) and that ``position`` changed in the kernel; then sets ``position`` from Python and
checks the divider moved. Screenshots go to ``test-artifacts/browser/`` (gitignored).

Skipped when Chromium/playwright/JupyterLab are missing, unless ``FLUXNB_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import nbformat
import pytest
from PIL import Image

from tests.browser_support import KERNEL_EVAL, KERNEL_IDLE, open_notebook, require_browser
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
RED, BLUE = (220, 30, 30), (30, 60, 220)
W, H = 400, 240

pytestmark = pytest.mark.slow

RUN_ALL = "() => { window.jupyterapp.shell.collapseLeft(); " \
          "window.jupyterapp.commands.execute('notebook:run-all-cells'); }"
IMAGES_LOADED = "(el) => Array.from(el.querySelectorAll('img'))" \
                ".every((i) => i.complete && i.naturalWidth > 0)"


def _notebook(folder: Path) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import fluxnb\nfrom PIL import Image\n"
        f"before = Image.new('RGB', (2 * {W}, 2 * {H}), {RED})\n"
        f"after = Image.new('RGB', (2 * {W}, 2 * {H}), {BLUE})\n"
        f"view = fluxnb.compare(before, after, labels=('red', 'blue'), width={W})\nview")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "swipe.ipynb")
    return "swipe.ipynb"


def _colour_at(shot: Image.Image, fraction: float) -> tuple[int, int, int]:
    """The colour of the screenshot ``shot`` (of the swipe element) at ``fraction`` of its width,
    on its lower half (below the labels)."""
    px = shot.convert("RGB").getpixel((int(fraction * (shot.width - 1)), shot.height * 3 // 4))
    assert isinstance(px, tuple)
    return px[0], px[1], px[2]


def _near(got: tuple[int, int, int], want: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(got, want, strict=True))


def _shows(swipe: Any, expected: dict[float, tuple[int, int, int]]) -> None:
    """Eventually every ``fraction -> colour`` of ``expected`` is what the element shows."""
    seen: list[dict[float, tuple[int, int, int]]] = []

    def matches() -> bool:
        shot = Image.open(io.BytesIO(swipe.screenshot()))
        seen.append({f: _colour_at(shot, f) for f in expected})
        return all(_near(seen[-1][f], c) for f, c in expected.items())

    eventually(matches, 10, lambda: f"shown {seen[-1]}, expected {expected}", interval=0.1)


def _kernel(page: Any, code: str, expected: str) -> None:
    seen: list[str] = []

    def matches() -> bool:
        seen.append(page.evaluate(KERNEL_EVAL, code))
        return seen[-1] == expected

    eventually(matches, 15, lambda: f"{code} is {seen[-1]!r} in the kernel, not {expected!r}", interval=0)


def test_drag_the_swipe_divider_in_jupyterlab(tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import expect

    root = tmp_path / "root"
    root.mkdir()
    name = _notebook(root)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open_notebook(root, tmp_path, name, failure_shot=ARTIFACTS / "swipe-failure.png") as page:
        page.evaluate(RUN_ALL)
        swipe = page.locator(".fluxnb-swipe")
        expect(swipe).to_have_count(1, timeout=45_000)
        page.wait_for_function(KERNEL_IDLE)
        page.wait_for_function(IMAGES_LOADED, arg=swipe.element_handle())
        box = swipe.bounding_box()
        assert box is not None and round(box["width"]) == W and round(box["height"]) == H, box
        expect(swipe.locator(".fluxnb-swipe-label-before")).to_have_text("red")
        expect(swipe.locator(".fluxnb-swipe-label-after")).to_have_text("blue")
        # -- at 0.5: red left of the divider, blue right of it
        _shows(swipe, {0.1: RED, 0.4: RED, 0.6: BLUE, 0.9: BLUE})
        swipe.screenshot(path=str(ARTIFACTS / "swipe-start.png"))

        # -- drag the divider with the mouse from the middle to 80 %
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + 0.5 * box["width"], y)
        page.mouse.down()
        for i in range(1, 11):
            page.mouse.move(box["x"] + (0.5 + 0.03 * i) * box["width"], y)
        page.mouse.up()
        _shows(swipe, {0.1: RED, 0.7: RED, 0.9: BLUE})
        _kernel(page, "round(view.position, 2)", "0.8")     # the drag reached Python
        swipe.screenshot(path=str(ARTIFACTS / "swipe-dragged.png"))

        # -- set from Python: the divider moves to 20 %
        page.evaluate(KERNEL_EVAL, "view.position = 0.2")
        _shows(swipe, {0.1: RED, 0.3: BLUE, 0.9: BLUE})
        # -- the keyboard: focused, ArrowRight x5 at 0.02 each
        swipe.focus()
        for _ in range(5):
            swipe.press("ArrowRight")
        _kernel(page, "round(view.position, 2)", "0.3")
        # -- a new pair from Python replaces both images in place
        page.evaluate(KERNEL_EVAL, "view.set_images(after, before, labels=('blue', 'red'))")
        _shows(swipe, {0.1: BLUE, 0.5: RED, 0.9: RED})
        expect(swipe.locator(".fluxnb-swipe-label-before")).to_have_text("blue")
        page.screenshot(path=str(ARTIFACTS / "swipe-lab.png"))
