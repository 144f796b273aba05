"""Parameters inside image bytes (fluxnb.params_meta): PNG and JPEG round trips with untouched
pixels, the A1111 text, replacement of an old record, what is never written, clear errors."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb.params_meta import (
    MetadataError,
    a1111_text,
    build_metadata,
    embed_metadata,
    input_digest,
    read_params,
)

PARAMS = {"prompt": "a gold pin — é", "steps": 12, "guidance": 4.0, "strength": 0.7, "seed": 9,
          "num_images": 2, "output_format": "png", "image_url": "data:image/png;base64,AAAA",
          "mask_url": "https://user:s3cret@cdn.example/m.png?token=SECRET-TOKEN#x",
          "loras": [{"path": "https://h.example/style.safetensors?sig=SECRET-SIG", "scale": 0.6}]}


def _encoded(fmt: str) -> bytes:
    rgb = np.random.default_rng(3).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, quality=95)
    return buf.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _meta() -> dict:
    return build_metadata(PARAMS, engine="preview", backend="127.0.0.1:8765")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_round_trip_keeps_pixels_and_gives_run_inputs(fmt: str, tmp_path: Path) -> None:
    data = _encoded(fmt)
    embedded = embed_metadata(data, _meta())
    assert embedded != data and np.array_equal(_pixels(embedded), _pixels(data))
    path = tmp_path / f"out.{fmt.lower()}"
    path.write_bytes(embedded)
    with Image.open(path) as opened:
        sources = [path, str(path), embedded, opened]
        all_params = [read_params(source) for source in sources]
    for params in all_params:
        assert params["prompt"] == "a gold pin — é" and params["num_inference_steps"] == 12
        assert params["guidance_scale"] == 4.0 and params["seed"] == 9 and params["num_images"] == 2
        assert params["loras"] == [{"path": "https://h.example/style.safetensors", "scale": 0.6}]
        assert "image_url" not in params and "mask_url" not in params
    fluxnb.schema.validate_input({**params, "image_url": "https://x/i.png",
                                  "mask_url": "https://x/m.png"})
    full = fluxnb.read_params(path, full=True)
    assert full["engine"] == "preview" and full["backend"] == "127.0.0.1:8765"
    assert full["fluxnb"] == fluxnb.__version__
    assert full["inputs"]["image_url"] == {"sha256": hashlib.sha256(b"\0\0\0").hexdigest()}
    assert full["inputs"]["mask_url"] == {"url": "https://cdn.example/m.png"}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_second_record_replaces_the_first(fmt: str) -> None:
    once = embed_metadata(_encoded(fmt), _meta())
    twice = embed_metadata(once, build_metadata({**PARAMS, "seed": 8}, engine="preview",
                                                backend="127.0.0.1:8765"))
    assert read_params(twice)["seed"] == 8 and len(twice) == len(once)
    assert twice.count(b'"fluxnb": ') == 1


def test_png_carries_the_a1111_parameters_text_and_jpeg_its_comment() -> None:
    png = Image.open(io.BytesIO(embed_metadata(_encoded("PNG"), _meta())))  # in memory
    text = png.info["parameters"]
    prompt, line = text.split("\n")
    assert prompt == "a gold pin — é"
    assert line.startswith("Steps: 12, Sampler: FLUX, CFG scale: 4.0, Seed: 9, ")
    assert "Denoising strength: 0.7" in line and "Model: preview" in line
    assert 'Lora hashes: "style: 0.6"' in line and f"Version: fluxnb {fluxnb.__version__}" in line
    jpeg = Image.open(io.BytesIO(embed_metadata(_encoded("JPEG"), _meta())))
    assert jpeg.info["comment"].decode() == text
    assert json.loads(png.info["fluxnb"]) == json.loads(
        jpeg.getexif().get_ifd(0x8769)[0x9286][8:].decode())
    assert a1111_text(_meta()) == text


def test_no_credential_or_image_data_is_ever_written() -> None:
    big = "data:image/png;base64," + "QUFB" * 5000
    for fmt in ("PNG", "JPEG"):
        data = embed_metadata(_encoded(fmt), build_metadata({**PARAMS, "image_url": big},
                                                            engine="x", backend="h"))
        for secret in (b"s3cret", b"SECRET-TOKEN", b"SECRET-SIG", b"QUFBQUFB", b"user"):
            assert secret not in data, (fmt, secret)
    assert input_digest(object()) == {}


def test_other_formats_are_left_alone() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="WEBP")
    assert embed_metadata(buf.getvalue(), _meta()) == buf.getvalue()


def test_errors_name_the_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    plain.write_bytes(_encoded("PNG"))
    with pytest.raises(MetadataError, match=r"plain\.png: no fluxnb parameters in this PNG"):
        read_params(plain)
    with pytest.raises(MetadataError, match=r"nope\.png: not an image"):
        read_params(tmp_path / "nope.png")
    bad = embed_metadata(_encoded("PNG"), {**_meta(), "params": {"prompt": "p", "strength": 9}})
    (tmp_path / "bad.png").write_bytes(bad)
    with pytest.raises(MetadataError, match=r"bad\.png: the saved parameters are not valid here: "
                                            r"strength=9 is out of range"):
        read_params(tmp_path / "bad.png")
    with pytest.raises(MetadataError, match="takes a path, bytes or a PIL image"):
        read_params(3.5)
    assert issubclass(MetadataError, fluxnb.FluxnbError) and issubclass(MetadataError, ValueError)


def test_unknown_saved_fields_are_dropped() -> None:
    data = embed_metadata(_encoded("PNG"), {**_meta(), "params": {"prompt": "p", "future": 1}})
    assert read_params(data) == {"prompt": "p"}


def test_a_result_without_its_inputs_writes_only_what_it_knows(tmp_path: Path) -> None:
    from fluxnb.datauri import encode_data_uri

    result = fluxnb.InpaintResult({"images": [{"url": encode_data_uri(_encoded("PNG"), "image/png")}],
                                   "seed": 4, "prompt": "by hand"})
    path = result.save(tmp_path)[0]
    assert read_params(path) == {"prompt": "by hand", "seed": 4}
