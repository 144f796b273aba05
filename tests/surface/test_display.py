"""show_grid: before / mask overlay / after as a matplotlib figure or static HTML."""

from __future__ import annotations

import base64
import io
import re
import time

import matplotlib.pyplot as plt
import pytest
from PIL import Image

import fluxnb
from fluxnb.display import GridFigure, param_title, show_grid
from fluxnb.images import to_data_uri
from fluxnb.result import InpaintResult
from tests.conftest import make_test_image, make_test_mask


def fake_result(*outputs: Image.Image, seed: int = 42) -> InpaintResult:
    return InpaintResult({"images": [{"url": to_data_uri(o), "width": o.width, "height": o.height}
                                     for o in outputs], "seed": seed}, request_id="req-1")


def img_tags(html: str) -> list[Image.Image]:
    out = []
    for _mime, data in re.findall(r"src='data:(image/\w+);base64,([^']+)'", html):
        out.append(Image.open(io.BytesIO(base64.b64decode(data))))
    return out


def test_param_title_uses_short_names_and_the_result_seed() -> None:
    assert param_title({"num_inference_steps": 28, "guidance_scale": 3.5, "strength": 0.85},
                       seed=42) == "steps=28 · guidance=3.5 · strength=0.85 · seed=42"
    assert param_title({"seed": 1}, seed=2) == "seed=1"          # the parameter wins
    assert "style.safetensors×0.8" in param_title(
        {"loras": [{"path": "https://x/style.safetensors", "scale": 0.8}]})


def test_one_result_is_one_row_of_before_mask_after() -> None:
    image, mask = make_test_image(), make_test_mask()
    result = fake_result(image.rotate(180))
    fig = show_grid(result, image=image, mask=mask, params={"num_inference_steps": 8})
    assert isinstance(fig, GridFigure) and len(fig.axes) == 3
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["before", "mask", "after"]
    png = fig._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (title,) = row_titles(fig)
    assert title.get_text() == "steps=8 · seed=42"
    _assert_centred_over_the_figure(fig, title)


def row_titles(fig: GridFigure) -> list:
    return [t for sub in fig.subfigs for t in sub.texts if t.get_text()]


def _assert_centred_over_the_figure(fig: GridFigure, title) -> None:
    """The title's rendered box is centred on the whole figure, not over the last column."""
    fig.canvas.draw()
    box, width = title.get_window_extent(), fig.bbox.width
    assert abs((box.x0 + box.x1) / 2 - width / 2) < 0.03 * width
    assert box.x0 < width / 2 < box.x1             # over the middle column, not only "after"


def test_many_results_are_rows_with_their_own_titles() -> None:
    image, mask = make_test_image(), make_test_mask()
    results = [fake_result(image, seed=s) for s in (1, 2, 3)]
    fig = show_grid(results, image=image, mask=mask,
                    params=[{"strength": s} for s in (0.3, 0.6, 0.9)])
    assert len([ax for ax in fig.axes if ax.images]) == 9
    assert [ax.get_title() for ax in fig.axes if ax.get_title().startswith("after")] == ["after"] * 3
    titles = row_titles(fig)
    assert [t.get_text() for t in titles] == [f"strength={s} · seed={seed}"
                                              for s, seed in ((0.3, 1), (0.6, 2), (0.9, 3))]
    for title in titles:
        _assert_centred_over_the_figure(fig, title)
    with pytest.raises(ValueError, match="params has 2 entries for 3 results"):
        show_grid(results, image=image, mask=mask, params=[{}, {}])


def test_the_figure_is_not_left_in_pyplot() -> None:
    before = plt.get_fignums()
    show_grid(outputs=[make_test_image()])
    assert plt.get_fignums() == before


def test_html_has_only_embedded_thumbnails(tmp_path) -> None:
    big = make_test_image(1024, 768)
    mask = make_test_mask(1024, 768)
    html = show_grid(fake_result(big, big), image=big, mask=mask, params={"strength": 0.5},
                     max_side=200, return_html=True)
    assert isinstance(html, str)
    thumbs = img_tags(html)
    assert len(thumbs) == html.count("<img") == 4           # before, mask, after 1, after 2
    assert all(max(t.size) == 200 for t in thumbs)
    assert "strength=0.5 · seed=42" in html
    assert "<script" not in html and "http" not in html       # static: survives nbconvert/GitHub
    assert ">after 2<" in html


def test_explicit_images_and_titles() -> None:
    image, mask = make_test_image(), make_test_mask()
    html = show_grid([image, image], image=image, mask=mask, titles=["mine"], return_html=True)
    assert "mine" in html and html.count("<img") == 4
    with pytest.raises(ValueError, match="nothing to show"):
        show_grid(outputs=[])
    with pytest.raises(ValueError, match="titles has 2 entries for 1 rows"):
        show_grid(outputs=[image], titles=["a", "b"])


def test_a_result_that_knows_its_inputs_displays_the_grid() -> None:
    image, mask = make_test_image(), make_test_mask()
    result = fake_result(image)
    plain = result._repr_html_()
    assert "fluxnb-grid" not in plain and plain.count("<img") == 1     # thumbnails only
    shown = result.with_inputs(image, mask, {"num_inference_steps": 9, "image_url": "data:..."})
    assert shown is result and result.params == {"num_inference_steps": 9}
    html = result._repr_html_()
    assert "fluxnb-grid" in html and html.count("<img") == 3 and "steps=9 · seed=42" in html
    assert len(show_grid(result).axes) == 3        # no image=/mask= needed any more


def test_show_grid_of_a_1024_result_is_fast() -> None:
    big = make_test_image(1024, 1024)
    result = fake_result(big)
    result.pil_images()                             # decode once, as a shown result already is
    t0 = time.perf_counter()
    fig = show_grid(result, image=big, mask=make_test_mask(1024, 1024))
    fig._repr_png_()
    html = show_grid(result, image=big, mask=make_test_mask(1024, 1024), return_html=True)
    elapsed = time.perf_counter() - t0
    print(f"show_grid 1024x1024: figure + PNG + HTML in {elapsed:.2f} s; HTML {len(html) // 1024} KiB")
    assert elapsed < 5.0
    assert len(html) < 400_000


def test_show_grid_is_public() -> None:
    assert fluxnb.show_grid is show_grid
