"""Paste-back for every engine, through the server (issue 12, item 3), and the diffusers engine's
crop-and-stitch (item 4): zero changed pixels beyond the reported feather band (PNG).

Engines: ``null``, ``preview``, an engine that changes every pixel (``Invert``, here), the
``diffusers`` engine on a tiny FLUX built in code (CPU), and the ``fal`` gateway in front of a
loopback upstream whose output changes every pixel.
"""

from __future__ import annotations

import importlib.util
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb.server import BackgroundServer
from fluxnb.server.auth import new_roster, write_roster
from fluxnb.server.engines import Engine, EngineOutput, EngineRequest, JobContext

from ..conftest import make_test_image, make_test_mask

Factory = Callable[..., BackgroundServer]
_HAVE_DIFFUSERS = all(importlib.util.find_spec(m) is not None
                      for m in ("torch", "diffusers", "transformers", "peft"))
needs_diffusers = pytest.mark.skipif(not _HAVE_DIFFUSERS, reason="needs the fluxnb[diffusers] extra")
SECRET = "fal-upstream-" + os.urandom(8).hex()


class Invert(Engine):
    """Changes every pixel of the image (what a VAE round trip does, only more so)."""

    name = "invert"
    description = "inverts the whole image; for tests"
    generative = False

    def run(self, request: EngineRequest, ctx: JobContext) -> EngineOutput:
        ctx.step(1, 1)
        inverted = Image.fromarray(255 - np.asarray(request.image.convert("RGB")))
        return EngineOutput(images=[inverted.copy() for _ in range(request.num_images)])


def _distance(mask: Image.Image) -> np.ndarray:
    import cv2

    outside = np.where(np.asarray(mask.convert("L")) >= 128, 0, 255).astype(np.uint8)
    return cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _run(server: BackgroundServer, image: Image.Image, mask: Image.Image, key: str | None = None,
         **fields: Any) -> tuple[dict[str, Any], list[np.ndarray], list[str]]:
    """Run one PNG job: (result JSON, output pixels, log lines)."""
    with fluxnb.connect(server.base_url, key=key) as client:
        result = client.run(prompt="a red fox", image_url=image, mask_url=mask,
                            output_format=fields.pop("output_format", "png"), seed=3, logs=True,
                            **fields)
        got = [np.asarray(img.convert("RGB")).astype(np.int16) for img in result.pil_images()]
    return result.raw, got, [e.message for e in result.logs or []]


def _changed_beyond_band(result: dict[str, Any], got: list[np.ndarray], image: Image.Image,
                         mask: Image.Image) -> int:
    band = result["paste_back"]["feather_px"]
    beyond = _distance(mask) >= band
    orig = np.asarray(image.convert("RGB")).astype(np.int16)
    return int(sum((g != orig).any(axis=-1)[beyond].sum() for g in got))


IMAGE, MASK = make_test_image(96, 64), make_test_mask(96, 64)


@pytest.mark.parametrize("engine,options", [
    ("null", {"delay": 0}),
    ("preview", {}),
    ("tests.server.test_paste_back:Invert", {}),
])
def test_every_engine_leaves_the_input_beyond_the_band(server_factory: Factory, engine: str,
                                                       options: dict[str, Any]) -> None:
    server = server_factory(engine=engine, engine_options=options)
    result, got, logs = _run(server, IMAGE, MASK, num_images=2)
    assert result["paste_back"] == {"applied": True, "feather_px": 4}   # 64 px short side
    assert _changed_beyond_band(result, got, IMAGE, MASK) == 0
    assert any(line.startswith("paste_back: the input's own pixels beyond 4 px") for line in logs)
    assert "paste_back" in result["timings"]
    if engine != "null":   # inside the mask the engine's own output is kept
        hole = np.asarray(MASK) >= 128
        assert (got[0] != np.asarray(IMAGE)).any(axis=-1)[hole].mean() > 0.5


def test_turned_off_the_engines_raw_output_comes_back(server_factory: Factory) -> None:
    server = server_factory(engine="tests.server.test_paste_back:Invert",
                            engine_options={"paste_back": False})
    result, got, logs = _run(server, IMAGE, MASK)
    assert result["paste_back"]["applied"] is False
    assert "paste_back=false" in result["paste_back"]["reason"]
    assert np.array_equal(got[0], 255 - np.asarray(IMAGE).astype(np.int16))
    assert any("paste_back: turned off" in line for line in logs)


def test_a_wider_band_and_jpeg_within_its_own_error(server_factory: Factory) -> None:
    server = server_factory(engine="tests.server.test_paste_back:Invert",
                            engine_options={"paste_back_feather": 9})
    result, got, _ = _run(server, IMAGE, MASK)
    assert result["paste_back"] == {"applied": True, "feather_px": 9}
    assert _changed_beyond_band(result, got, IMAGE, MASK) == 0
    jresult, jgot, _ = _run(server, IMAGE, MASK, output_format="jpeg")
    buf = io.BytesIO()
    IMAGE.save(buf, format="JPEG", quality=95)     # the input encoded alone at the same quality
    alone = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.int16)
    truth = np.asarray(IMAGE).astype(np.int16)
    beyond = _distance(MASK) >= 9
    assert np.abs(jgot[0] - truth)[beyond].max() <= np.abs(alone - truth).max()
    assert np.array_equal(jgot[0][_distance(MASK) >= 9 + 23], alone[_distance(MASK) >= 9 + 23])


def test_the_fal_gateway_pastes_back_what_upstream_changed(server_factory: Factory,
                                                           tmp_path: Path) -> None:
    upstream = server_factory(engine="tests.server.test_paste_back:Invert", key=SECRET,
                              workers=1, engine_options={"paste_back": False})
    roster = new_roster(1, teachers=1)
    school = server_factory(engine="fal", roster=str(write_roster(tmp_path / "r.csv", roster)),
                            workers=1, upstream=upstream.base_url, fal_key=SECRET,
                            engine_options={"poll_interval": 0.05})
    result, got, _ = _run(school, IMAGE, MASK, key=roster[0].token)
    assert result["paste_back"]["applied"] is True
    assert _changed_beyond_band(result, got, IMAGE, MASK) == 0
    hole = np.asarray(MASK) >= 128
    assert np.array_equal(got[0][hole], 255 - np.asarray(IMAGE).astype(np.int16)[hole])


# -- the diffusers engine on a tiny FLUX (CPU) --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            mp.setenv(name, "1")
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
        from tests.tinyflux import import_diffusers, save_tiny_pipeline

        import_diffusers()
        yield save_tiny_pipeline(tmp_path_factory.mktemp("tinyflux") / "tiny-flux")


def _diffusers(server_factory: Factory, folder: Path, **options: Any) -> BackgroundServer:
    return server_factory(engine="diffusers", workers=1,
                          engine_options={"model": str(folder), "device": "cpu", **options})


def _small_mask(size: int = 256) -> Image.Image:
    arr = np.zeros((size, size), np.uint8)
    arr[100:124, 110:130] = 255
    return Image.fromarray(arr, "L")


@needs_diffusers
def test_diffusers_zero_changed_pixels_beyond_the_band(server_factory: Factory,
                                                       tiny_folder: Path) -> None:
    image, mask = make_test_image(64, 64), make_test_mask(64, 64)
    result, got, _ = _run(_diffusers(server_factory, tiny_folder), image, mask,
                          num_inference_steps=3)
    assert result["paste_back"] == {"applied": True, "feather_px": 4}
    assert _changed_beyond_band(result, got, image, mask) == 0
    assert "crop" not in result           # a 64x64 image is no larger than the working size
    raw, raw_got, _ = _run(_diffusers(server_factory, tiny_folder, paste_back=False), image,
                           mask, num_inference_steps=3)
    assert raw["paste_back"]["applied"] is False
    # the pipeline's raw output changes pixels far outside the mask (the VAE round trip)
    assert _changed_beyond_band(result, raw_got, image, mask) > 0


@needs_diffusers
def test_diffusers_crop_and_stitch_keeps_the_size_and_the_outside(server_factory: Factory,
                                                                  tiny_folder: Path) -> None:
    image, mask = make_test_image(256, 256, seed=4), _small_mask()
    server = _diffusers(server_factory, tiny_folder, working_size=64, crop_padding=16)
    result, got, logs = _run(server, image, mask, num_inference_steps=3)
    assert (result["images"][0]["width"], result["images"][0]["height"]) == (256, 256)
    assert got[0].shape == (256, 256, 3)
    assert result["crop"] == {"box": [94, 84, 146, 140],
                              "inpainted_at": {"width": 64, "height": 64}}
    assert any(line.startswith("crop: inpainting the mask's padded box x 94-146, y 84-140")
               and "the output stays 256x256" in line for line in logs), logs
    assert _changed_beyond_band(result, got, image, mask) == 0
    hole = np.asarray(mask) >= 128
    assert (got[0] != np.asarray(image)).any(axis=-1)[hole].mean() > 0.5
    off = _diffusers(server_factory, tiny_folder, working_size=64, crop=False)
    whole, _, whole_logs = _run(off, image, mask, num_inference_steps=3)
    assert "crop" not in whole and not any(line.startswith("crop:") for line in whole_logs)


@needs_diffusers
def test_diffusers_crop_without_paste_back_changes_only_the_crop(server_factory: Factory,
                                                                 tiny_folder: Path) -> None:
    image, mask = make_test_image(256, 256, seed=4), _small_mask()
    server = _diffusers(server_factory, tiny_folder, working_size=64, crop_padding=16,
                        paste_back="false")
    result, got, _ = _run(server, image, mask, num_inference_steps=3)
    x0, y0, x1, y1 = result["crop"]["box"]
    changed = (got[0] != np.asarray(image)).any(axis=-1)
    outside = np.ones(changed.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert changed[outside].sum() == 0 and result["paste_back"]["applied"] is False
    # inside the crop the pipeline's raw output: pixels change well beyond the mask too
    assert changed[_distance(mask) >= 8].sum() > 0
