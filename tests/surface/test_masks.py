"""Mask tools: shapes, threshold, invert, grow/shrink, feather, fit to the image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb.masks import (
    MaskMismatchError,
    feather_mask,
    fit_mask,
    grow_mask,
    invert_mask,
    mask_box,
    mask_coverage,
    mask_ellipse,
    mask_polygon,
    mask_threshold,
    union_mask,
)


def arr(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask)


def test_box_is_exact_in_pixels_and_in_fractions() -> None:
    m = mask_box((40, 20), (10, 5, 20, 15))
    assert m.mode == "L" and m.size == (40, 20)
    a = arr(m)
    assert a[5:15, 10:20].min() == 255 and a.sum() == 255 * 100
    assert arr(mask_box((40, 20), (0.25, 0.25, 0.5, 0.75), relative=True)).tolist() == a.tolist()


def test_shapes_take_the_size_from_an_image(image: Image.Image) -> None:
    assert mask_ellipse(image, (0, 0, 1, 1), relative=True).size == image.size
    assert mask_box(image, (0, 0, 1, 1), relative=True).getextrema() == (255, 255)


def test_ellipse_covers_about_pi_over_four() -> None:
    assert mask_coverage(mask_ellipse((200, 200), (0, 0, 200, 200))) == pytest.approx(np.pi / 4, abs=0.01)


def test_polygon_triangle_covers_half_of_its_box() -> None:
    m = mask_polygon((100, 100), [(0, 0), (100, 0), (0, 100)])
    assert mask_coverage(m) == pytest.approx(0.5, abs=0.02)
    assert m.getpixel((5, 5)) == 255 and m.getpixel((95, 95)) == 0
    with pytest.raises(ValueError, match="at least 3 points"):
        mask_polygon((10, 10), [(0, 0), (1, 1)])


def test_threshold_on_brightness_and_on_a_channel() -> None:
    img = Image.new("RGB", (2, 1))
    img.putpixel((0, 0), (250, 10, 10))
    img.putpixel((1, 0), (240, 240, 240))
    assert arr(mask_threshold(img, 200)).ravel().tolist() == [0, 255]
    assert arr(mask_threshold(img, 200, channel="R")).ravel().tolist() == [255, 255]
    assert arr(mask_threshold(img, 200, above=False)).ravel().tolist() == [255, 0]
    with pytest.raises(ValueError, match="channel"):
        mask_threshold(img, channel="alpha")


def test_invert_and_union() -> None:
    m = mask_box((10, 10), (0, 0, 5, 10))
    assert mask_coverage(invert_mask(m)) == pytest.approx(0.5)
    assert mask_coverage(union_mask(m, invert_mask(m))) == 1.0
    with pytest.raises(MaskMismatchError, match="10x10 vs 5x5"):
        union_mask(m, Image.new("L", (5, 5)))


def test_grow_and_shrink_move_the_edge_by_the_radius() -> None:
    m = mask_box((60, 60), (20, 20, 40, 40))     # 20x20 square
    grown, shrunk = arr(grow_mask(m, 3)), arr(grow_mask(m, -3))
    assert grown[30, 17] == 255 and grown[30, 16] == 0     # 3 px out, not 4
    assert shrunk[30, 23] == 255 and shrunk[30, 22] == 0   # 3 px in
    assert arr(grow_mask(m, 0)).tolist() == arr(m).tolist()


def test_feather_softens_only_near_the_edge() -> None:
    m = mask_box((60, 60), (30, 0, 60, 60))
    f = arr(feather_mask(m, 4))
    assert 0 < f[30, 30] < 255 and f[30, 2] == 0 and f[30, 58] == 255
    with pytest.raises(ValueError, match="radius"):
        feather_mask(m, -1)


def test_fit_mask_resizes_same_aspect_and_refuses_another() -> None:
    image = Image.new("RGB", (200, 100))
    fitted = fit_mask(mask_box((100, 50), (0, 0, 50, 50)), image)
    assert fitted.size == (200, 100) and set(arr(fitted).ravel()) == {0, 255}   # still hard-edged
    with pytest.raises(MaskMismatchError) as info:
        fit_mask(Image.new("L", (100, 100)), image)
    assert "100x100" in str(info.value) and "200x100" in str(info.value)
    with pytest.raises(MaskMismatchError, match="resize=True"):
        fit_mask(Image.new("L", (100, 50)), image, resize=False)
    assert isinstance(info.value, ValueError)


def test_mask_tools_accept_any_mask_input(tmp_path) -> None:
    path = tmp_path / "m.png"
    mask_box((8, 8), (0, 0, 4, 8)).save(path)
    assert mask_coverage(str(path)) == 0.5
    assert mask_coverage(np.ones((4, 4), bool)) == 1.0


def test_mask_tools_are_public() -> None:
    for name in ("mask_box", "mask_ellipse", "mask_polygon", "mask_threshold", "invert_mask",
                 "grow_mask", "feather_mask", "fit_mask", "MaskMismatchError"):
        assert name in fluxnb.__all__ and getattr(fluxnb, name) is getattr(fluxnb.masks, name)


# -- masks that repaint nothing, and masks of another shape, on every path to the server ------


def _red_on_black(size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Red paint on black, as a drawing program saves it: luminance 76 < 128, so it paints nothing."""
    img = Image.new("RGB", size)
    img.paste((255, 0, 0), (20, 10, 60, 40))
    return img


def _binary_array(size: tuple[int, int] = (96, 64)) -> np.ndarray:
    """What segmentation code returns: uint8 0 = keep, 1 = repaint."""
    seg = np.zeros((size[1], size[0]), np.uint8)
    seg[16:48, 32:64] = 1
    return seg


def test_empty_mask_helpers_say_what_they_saw() -> None:
    from fluxnb.masks import empty_mask_reason, mask_is_empty

    assert mask_is_empty(Image.new("L", (8, 8))) and mask_is_empty(_red_on_black())
    assert not mask_is_empty(_binary_array()) and not mask_is_empty(mask_box((8, 8), (0, 0, 1, 1)))
    reason = empty_mask_reason(_red_on_black())
    assert reason is not None and "the brightest mask pixel is 76" in reason
    assert "white (>= 128) marks what to repaint" in reason and "fluxnb.mask_threshold" in reason
    assert "is 0" in str(empty_mask_reason(Image.new("L", (8, 8))))
    assert empty_mask_reason(_binary_array()) is None


def _client(flavor: str, base_url: str):  # type: ignore[no-untyped-def]
    from fluxnb.client import AsyncQueueClient, QueueClient

    return (QueueClient if flavor == "sync" else AsyncQueueClient)(base_url)


def _submits(server) -> int:  # type: ignore[no-untyped-def]
    import httpx

    return int(httpx.get(server.base_url + "/_fluxnb/stats").json()["requests"].get("submit", 0))


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["black", "red-on-black", "black-data-uri", "black-file"])
async def test_the_client_refuses_an_empty_mask_before_sending(flavor, kind, server_factory, image,
                                                               tmp_path) -> None:
    from fluxnb.errors import ValidationError
    from fluxnb.images import to_data_uri
    from tests.twins import call, close

    server = server_factory(engine="preview")
    black = Image.new("L", image.size)
    black.save(tmp_path / "black.png")
    mask = {"black": black, "red-on-black": _red_on_black(image.size),
            "black-data-uri": to_data_uri(black, mask=True), "black-file": tmp_path / "black.png"}[kind]
    client = _client(flavor, server.base_url)
    try:
        with pytest.raises(ValidationError) as info:
            await call(client.run, prompt="a fox", image_url=image, mask_url=mask)
    finally:
        await close(client)
    assert info.value.fields == ["mask_url"]
    assert str(info.value).startswith("mask_url: ")
    assert f"the brightest mask pixel is {76 if kind == 'red-on-black' else 0}" in str(info.value)
    assert "fluxnb.mask_threshold" in str(info.value)
    assert _submits(server) == 0


@pytest.mark.anyio
async def test_the_client_sends_a_0_1_array_as_a_binary_mask(flavor, live_server, image) -> None:
    from tests.twins import call, close

    client = _client(flavor, live_server.base_url)
    try:
        result = await call(client.run, prompt="a fox", image_url=image, mask_url=_binary_array(),
                            seed=1)
    finally:
        await close(client)
    assert not any("mask is empty" in entry.message for entry in result.logs)
    out = np.asarray((await call(result.apil_images if flavor == "async" else result.pil_images))[0])
    assert not np.array_equal(out[16:48, 32:64], np.asarray(image)[16:48, 32:64])  # repainted


@pytest.mark.anyio
@pytest.mark.parametrize("as_files", [False, True])
async def test_the_client_refuses_a_mask_of_another_aspect_ratio(flavor, as_files, server_factory,
                                                                 tmp_path) -> None:
    from fluxnb.errors import ValidationError
    from tests.conftest import make_test_image, make_test_mask
    from tests.twins import call, close

    server = server_factory(engine="preview")
    image, mask = make_test_image(64, 75), make_test_mask(75, 64)   # 600x512 vs 512x600, scaled
    if as_files:
        image.save(tmp_path / "image.jpg")
        mask.save(tmp_path / "mask.png")
        image, mask = tmp_path / "image.jpg", tmp_path / "mask.png"  # type: ignore[assignment]
    client = _client(flavor, server.base_url)
    try:
        with pytest.raises(MaskMismatchError) as info:
            await call(client.run, prompt="a fox", image_url=image, mask_url=mask)
    finally:
        await close(client)
    assert isinstance(info.value, ValidationError) and info.value.fields == ["mask_url"]
    assert "75x64" in str(info.value) and "64x75" in str(info.value)
    assert _submits(server) == 0


@pytest.mark.anyio
async def test_the_client_resizes_a_mask_of_the_same_aspect_ratio_and_says_so(
        flavor, live_server, image, caplog) -> None:
    import logging

    from tests.conftest import make_test_mask
    from tests.twins import call, close

    caplog.set_level(logging.INFO, logger="fluxnb")
    client = _client(flavor, live_server.base_url)
    try:
        result = await call(client.run, prompt="a fox", image_url=image,
                            mask_url=make_test_mask(48, 32), seed=1)
    finally:
        await close(client)
    assert (result.images[0].width, result.images[0].height) == image.size
    lines = [r.getMessage() for r in caplog.records if "resized" in r.getMessage()]
    assert len(lines) == 1 and "48x32" in lines[0] and "96x64" in lines[0], caplog.text


def test_the_cli_refuses_a_mask_of_another_aspect_ratio(tmp_path, live_server, capsys) -> None:
    from fluxnb.cli import main
    from tests.conftest import make_test_image, make_test_mask

    make_test_image(64, 75).save(tmp_path / "in.png")
    make_test_mask(75, 64).save(tmp_path / "m.png")
    code = main(["run", "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "m.png"),
                 "--prompt", "a fox", "--out", str(tmp_path / "out"),
                 "--base-url", live_server.base_url])
    err = capsys.readouterr().err
    assert code != 0 and "75x64" in err and "64x75" in err, err
    assert "Traceback" not in err
