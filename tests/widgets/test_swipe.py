"""The swipe comparison headless: what the widget holds and sends, with no kernel or browser."""

from __future__ import annotations

import base64
import io

import pytest
import traitlets
from PIL import Image

import fluxnb
from fluxnb.datauri import encode_data_uri
from fluxnb.widgets.swipe import DEFAULT_WIDTH, SwipeView, compare, side_by_side


def _solid(colour: str, size: tuple[int, int] = (1024, 1024)) -> Image.Image:
    return Image.new("RGB", size, colour)


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _sent(view: SwipeView, key: str) -> Image.Image:
    """The image the widget syncs to the browser under ``key`` (``_before``/``_after``)."""
    state = view.get_state()
    assert state["_mime"] in ("image/png", "image/jpeg")
    return Image.open(io.BytesIO(getattr(view, key)))


def test_images_are_sent_at_display_size_not_full_size() -> None:
    view = compare(_solid("red"), _solid("blue"))
    assert view.display_size == (DEFAULT_WIDTH, DEFAULT_WIDTH)
    assert _sent(view, "_before").size == _sent(view, "_after").size == (DEFAULT_WIDTH, DEFAULT_WIDTH)
    assert _sent(view, "_before").convert("RGB").getpixel((10, 10)) == (255, 0, 0)
    assert _sent(view, "_after").convert("RGB").getpixel((10, 10)) == (0, 0, 255)
    assert view.payload_bytes == len(view._before) + len(view._after) < 20_000


def test_width_sets_the_display_size_and_small_images_are_not_upscaled() -> None:
    assert SwipeView(_solid("red", (800, 400)), _solid("blue", (800, 400)), width=200).display_size \
        == (200, 100)
    assert compare(_solid("red", (64, 32)), _solid("blue", (64, 32))).display_size == (64, 32)


def test_an_after_of_another_aspect_is_letterboxed_to_the_before_size() -> None:
    view = compare(_solid("red", (400, 400)), _solid("blue", (400, 200)))
    after = _sent(view, "_after").convert("RGB")
    assert after.size == (400, 400)
    assert after.getpixel((200, 200)) == (0, 0, 255) and after.getpixel((200, 5)) != (0, 0, 255)


@pytest.mark.parametrize("width", [0, 15, 5000, 1.5, "512", True])
def test_a_bad_width_names_the_value_and_the_range(width: object) -> None:
    with pytest.raises(ValueError, match=r"width must be an int from 16 to 4096.*" + repr(width)[:3]):
        SwipeView(_solid("red"), _solid("blue"), width=width)  # type: ignore[arg-type]


def test_labels_default_custom_and_bad() -> None:
    assert compare(_solid("red"), _solid("blue")).labels == ("before", "after")
    view = compare(_solid("red"), _solid("blue"), labels=["input", "steps=28"])
    assert view.labels == ("input", "steps=28") and list(view.get_state()["labels"]) == ["input", "steps=28"]
    for bad in ("ab", ("only one",), ("a", "b", "c"), None):
        with pytest.raises(ValueError, match="labels must be two strings"):
            compare(_solid("red"), _solid("blue"), labels=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("value, expected", [(0.25, 0.25), (-3, 0.0), (2.0, 1.0), (1, 1.0)])
def test_position_is_clamped_to_0_1(value: float, expected: float) -> None:
    view = compare(_solid("red"), _solid("blue"))
    assert view.position == 0.5
    view.position = value
    assert view.position == expected and view.get_state()["position"] == expected


def test_position_nan_is_refused() -> None:
    view = compare(_solid("red"), _solid("blue"))
    with pytest.raises(traitlets.TraitError, match="from 0 to 1, not nan"):
        view.position = float("nan")


def test_set_images_replaces_the_pair_and_keeps_labels_and_divider() -> None:
    view = compare(_solid("red"), _solid("blue"), labels=("a", "b"))
    view.position = 0.3
    changes: list[str] = []
    view.observe(lambda change: changes.append(change["name"]), names=["_before", "_after"])
    view.set_images(_solid("green", (300, 600)), _solid("yellow", (300, 600)))
    assert sorted(changes) == ["_after", "_before"]
    assert view.display_size == (300, 600) and view.labels == ("a", "b") and view.position == 0.3
    assert _sent(view, "_before").convert("RGB").getpixel((5, 5)) == (0, 128, 0)
    view.set_images(_solid("red"), _solid("blue"), labels=("x", "y"))
    assert view.labels == ("x", "y") and view.display_size == (512, 512)


def test_inputs_paths_bytes_and_results(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "red.png"
    _solid("red", (40, 40)).save(path)
    result = fluxnb.InpaintResult({"images": [{"url": encode_data_uri(_png(_solid("blue", (40, 40))),
                                                                      "image/png")}]})
    view = compare(str(path), result)
    assert _sent(view, "_before").convert("RGB").getpixel((1, 1)) == (255, 0, 0)
    assert _sent(view, "_after").convert("RGB").getpixel((1, 1)) == (0, 0, 255)
    view.set_images(_png(_solid("white", (40, 40))), path)
    assert _sent(view, "_before").convert("RGB").getpixel((1, 1)) == (255, 255, 255)


def test_empty_result_and_none_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="result with no output images"):
        compare(_solid("red"), fluxnb.InpaintResult({"images": []}))
    with pytest.raises(TypeError, match="before is None"):
        compare(None, _solid("red"))


def test_photographs_travel_as_jpeg() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8))
    view = compare(noisy, noisy.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert view._mime == "image/jpeg" and view.display_size == (512, 512)
    assert view.payload_bytes < 2 * 512 * 512      # well under the raw display-size pixels


def test_the_bundle_carries_the_widget_view_and_a_static_side_by_side_png() -> None:
    view = compare(_solid("red", (200, 100)), _solid("blue", (200, 100)), labels=("in", "out"))
    bundle = view._repr_mimebundle_()
    assert bundle is not None
    data, _metadata = bundle
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == view.model_id
    static = Image.open(io.BytesIO(base64.b64decode(data["image/png"]))).convert("RGB")
    assert static.size == side_by_side(_solid("red", (200, 100)), _solid("blue", (200, 100))).size
    w, h = static.size
    assert static.getpixel((w // 4, h * 3 // 4)) == (255, 0, 0)       # before on the left
    assert static.getpixel((w * 3 // 4, h * 3 // 4)) == (0, 0, 255)   # after on the right
    title_band = static.crop((0, 0, w, 20))
    assert min(title_band.convert("L").tobytes()) < 100                # the labels are drawn


def test_compare_is_public() -> None:
    assert fluxnb.compare is compare
