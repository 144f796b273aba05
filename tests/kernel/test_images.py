"""Input encoding: every accepted input type, what is passed through and what is re-encoded."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fluxnb.datauri import decode_data_uri
from fluxnb.images import encode_image, is_url, load_image, load_mask, to_data_uri


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def decode(uri: str) -> tuple[str, Image.Image]:
    mime, data = decode_data_uri(uri)
    img = Image.open(io.BytesIO(data))
    img.load()
    return mime, img


@pytest.mark.parametrize("url", ["https://x/a.png", "http://127.0.0.1:1/a", "data:image/png;base64,AA=="])
def test_urls_untouched(url):
    assert is_url(url)
    assert to_data_uri(url) == url
    assert to_data_uri(url, mask=True) == url


@pytest.mark.parametrize("fmt, mime", [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_png_and_jpeg_bytes_pass_through(image, fmt, mime):
    data = encoded(image, fmt)
    assert encode_image(data) == (data, mime)
    assert decode_data_uri(to_data_uri(data)) == (mime, data)


@pytest.mark.parametrize("fmt", ["WEBP", "GIF", "BMP", "TIFF"])
def test_other_formats_are_reencoded_png(image, fmt):
    data = encoded(image, fmt)
    out, mime = encode_image(data)
    assert mime == "image/png" and out != data and out.startswith(b"\x89PNG")
    _, img = decode(to_data_uri(data))
    assert img.size == image.size


def test_mask_png_passes_through_others_become_png_l(mask):
    png = encoded(mask, "PNG")
    assert encode_image(png, mask=True) == (png, "image/png")
    jpeg = encoded(mask.convert("RGB"), "JPEG")
    mime, img = decode(to_data_uri(jpeg, mask=True))
    assert mime == "image/png" and img.mode == "L" and img.size == mask.size


def test_pil_image_is_lossless_png(image):
    mime, img = decode(to_data_uri(image))
    assert mime == "image/png" and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), np.asarray(image))


def test_pil_modes(image):
    assert decode(to_data_uri(image.convert("P")))[1].mode == "RGB"
    assert decode(to_data_uri(image.convert("RGBA")))[1].mode == "RGBA"
    assert decode(to_data_uri(image.convert("CMYK")))[1].mode == "RGB"
    assert decode(to_data_uri(image, mask=True))[1].mode == "L"
    assert decode(to_data_uri(image.convert("1"), mask=True))[1].mode == "L"


def test_path_and_pathlike(tmp_path: Path, image):
    path = tmp_path / "photo.jpg"
    image.save(path, format="JPEG")
    data = path.read_bytes()
    assert decode_data_uri(to_data_uri(path)) == ("image/jpeg", data)
    assert decode_data_uri(to_data_uri(str(path))) == ("image/jpeg", data)


def test_missing_file_names_path(tmp_path: Path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        to_data_uri(missing)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        to_data_uri(str(missing))
    with pytest.raises(IsADirectoryError):
        to_data_uri(tmp_path)


@pytest.mark.parametrize(
    "array, mode",
    [
        (np.zeros((4, 6), np.uint8), "L"),
        (np.zeros((4, 6, 1), np.uint8), "L"),
        (np.zeros((4, 6, 3), np.uint8), "RGB"),
        (np.zeros((4, 6, 4), np.uint8), "RGBA"),
        (np.ones((4, 6), bool), "L"),
        (np.full((4, 6, 3), 0.5, np.float32), "RGB"),
        (np.full((4, 6), 200, np.int64), "L"),
    ],
)
def test_numpy_arrays(array, mode):
    mime, img = decode(to_data_uri(array))
    assert mime == "image/png" and img.mode == mode and img.size == (6, 4)


def test_numpy_values():
    _, img = decode(to_data_uri(np.array([[True, False]]), mask=True))
    assert list(np.asarray(img).ravel()) == [255, 0]
    _, img = decode(to_data_uri(np.array([[0.0, 0.5, 1.0]])))
    assert list(np.asarray(img).ravel()) == [0, 128, 255]
    _, img = decode(to_data_uri(np.zeros((2, 2, 3), np.uint8), mask=True))
    assert img.mode == "L"


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((3, 4, 5, 6), np.uint8), "(3, 4, 5, 6)"),
        (np.zeros((3, 4, 2), np.uint8), "(3, 4, 2)"),
        (np.zeros((0, 4), np.uint8), "(0, 4)"),
        (np.full((2, 2), 1.5), "0..1"),
        (np.full((2, 2), np.nan), "NaN"),
        (np.full((2, 2), 300, np.int32), "0..255"),
        (np.zeros((2, 2), complex), "complex"),
    ],
)
def test_bad_arrays_named(array, words):
    with pytest.raises(ValueError) as info:
        to_data_uri(array)
    assert words in str(info.value)


def test_unknown_type_and_bad_bytes():
    with pytest.raises(TypeError, match="cannot use 12"):
        to_data_uri(12)
    with pytest.raises(ValueError, match="not a readable image"):
        to_data_uri(b"definitely not an image")


def test_file_object(image):
    data = encoded(image, "PNG")
    assert decode_data_uri(to_data_uri(io.BytesIO(data))) == ("image/png", data)


def test_load_image_and_mask(tmp_path: Path, image, mask):
    path = tmp_path / "m.png"
    mask.save(path)
    assert load_mask(path).mode == "L" and load_mask(path).size == mask.size
    assert load_image(to_data_uri(image)).mode == "RGB"
    assert load_image(encoded(image, "WEBP")).size == image.size
    assert load_image(np.zeros((3, 5, 4), np.uint8)).mode == "RGB"
    assert load_mask(np.zeros((3, 5), bool)).size == (5, 3)
    assert load_mask(image).mode == "L"
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, bool])
def test_a_0_1_array_is_read_as_a_binary_mask(dtype):
    """What segmentation code returns (0 = keep, 1 = repaint) is a mask, not a nearly black image."""
    seg = np.zeros((4, 6), dtype)
    seg[1:3, 2:5] = 1
    assert np.array_equal(np.asarray(load_mask(seg)), seg.astype(np.uint8) * 255)
    _, img = decode(to_data_uri(seg, mask=True))
    assert np.array_equal(np.asarray(img), seg.astype(np.uint8) * 255)
    assert set(np.asarray(load_mask(np.zeros((2, 2), dtype))).ravel()) == {0}


def test_a_0_1_array_stays_as_it_is_as_an_image():
    dark = np.zeros((4, 6), np.uint8)
    dark[0, 0] = 1
    _, img = decode(to_data_uri(dark))
    assert np.asarray(img).max() == 1
    assert np.asarray(load_mask(np.full((2, 2), 2, np.uint8))).max() == 2  # only 0/1 is binary
