"""Every writer puts the job's parameters inside its images (issue 12, item 5): ``result.save()``,
``fluxnb run`` (and ``--params-from``), the panel's saves and "Load parameters", sweep images and
the server's own files; ``read_params`` round-trips them, and an image reproduces itself."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb.cli import main
from fluxnb.client import QueueClient
from fluxnb.server import BackgroundServer
from fluxnb.widgets import InpaintPanel
from tests.conftest import make_test_image, make_test_mask
from tests.sweep_support import small_inputs

KEY = "KEY-MARKER-7f3a"
SECRETS = (KEY.encode(), b"FAL-MARKER-91c2", b"FLUXNB-MARKER-55d0")


@pytest.fixture(autouse=True)
def _marked_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAL_KEY", SECRETS[1].decode())
    monkeypatch.setenv("FLUXNB_KEY", SECRETS[2].decode())


def _no_secret(path: Path | bytes) -> None:
    data = path if isinstance(path, bytes) else path.read_bytes()
    for secret in SECRETS:
        assert secret not in data, (path if isinstance(path, Path) else "bytes", secret)


def _pixels(source: Path | bytes) -> np.ndarray:
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        return np.asarray(img.convert("RGB"))


@pytest.fixture
def keyed(server_factory: Any) -> BackgroundServer:
    return server_factory(engine="preview", workers=1, key=KEY)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_result_save_round_trips_and_reproduces_the_image(keyed: BackgroundServer, tmp_path: Path,
                                                          fmt: str) -> None:
    image, mask = make_test_image(), make_test_mask()
    with QueueClient(keyed.base_url, key=KEY) as client:
        result = client.run(prompt="a moss wall", image_url=image, mask_url=mask, seed=5,
                            num_inference_steps=9, strength=0.8, output_format=fmt)
        first, _sidecar = result.save(tmp_path)
        params = fluxnb.read_params(first)
        assert params == {"prompt": "a moss wall", "seed": 5, "num_inference_steps": 9,
                          "strength": 0.8, "output_format": fmt, "guidance_scale": 3.5,
                          "num_images": 1, "enable_safety_checker": True, "loras": [],
                          "sync_mode": False}
        again = client.run(**params, image_url=image, mask_url=mask)
        full = fluxnb.read_params(first, full=True)
        server_file = result.image_bytes()[0]          # the server's own file, as served
    assert np.array_equal(_pixels(first), _pixels(server_file))   # saving changed no pixel
    if fmt == "png":
        assert np.array_equal(_pixels(first), _pixels(again.image_bytes()[0]))
    assert full["engine"] == "preview" and full["backend"] == keyed.base_url.split("//")[1]
    assert set(full["inputs"]["image_url"]) == {"sha256"}
    _no_secret(first)
    # the server's file carries the job too: validated inputs, seed, never the owner's key
    served = fluxnb.read_params(server_file, full=True)
    assert served["params"]["seed"] == 5 and served["params"]["num_inference_steps"] == 9
    assert served["backend"] == "fluxnb server" and "pixels_sha256" in served["inputs"]["image_url"]
    assert b"base64" not in server_file
    _no_secret(server_file)


def test_fluxnb_run_writes_parameters_and_params_from_reuses_them(
        live_server: BackgroundServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, mask = tmp_path / "in.png", tmp_path / "m.png"
    make_test_image(80, 48).save(image)
    make_test_mask(80, 48).save(mask)
    common = ["--image", str(image), "--mask", str(mask), "--base-url", live_server.base_url]
    assert main(["run", *common, "--prompt", "a fox", "--steps", "7", "--seed", "3",
                 "--format", "png", "--lora", "https://h.example/a.safetensors?sig=x@0.5",
                 "--out", str(tmp_path / "a")]) == 0
    first = next(p for p in (tmp_path / "a").glob("in-*_0.png"))
    params = fluxnb.read_params(first)
    assert params["prompt"] == "a fox" and params["seed"] == 3 and params["num_inference_steps"] == 7
    assert params["loras"] == [{"path": "https://h.example/a.safetensors", "scale": 0.5}]
    with Image.open(first) as opened:
        assert "Steps: 7, Sampler: FLUX" in opened.info["parameters"]
    _no_secret(first)
    capsys.readouterr()
    # no --prompt: it comes from the image; --steps given explicitly wins
    assert main(["run", *common, "--params-from", str(first), "--steps", "8",
                 "--out", str(tmp_path / "b")]) == 0
    second = next((tmp_path / "b").glob("in-*_0.png"))
    again = fluxnb.read_params(second)
    assert again["prompt"] == "a fox" and again["seed"] == 3 and again["num_inference_steps"] == 8
    assert again["loras"] == params["loras"]


def test_fluxnb_run_params_from_errors_are_clear(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    image, mask = tmp_path / "in.png", tmp_path / "m.png"
    make_test_image().save(image)
    make_test_mask().save(mask)
    for extra, expected in ((["--params-from", str(image)], "in.png: no fluxnb parameters"),
                            ([], "--prompt is required (or --params-from IMAGE")):
        with pytest.raises(SystemExit) as info:
            main(["run", "--image", str(image), "--mask", str(mask), *extra])
        assert info.value.code == 2 and expected in capsys.readouterr().err


def test_the_panel_saves_parameters_and_loads_them_from_an_upload(live_server: BackgroundServer,
                                                                  tmp_path: Path) -> None:
    client = QueueClient(live_server.base_url)
    panel = InpaintPanel(client, image=make_test_image(), mask=make_test_mask(),
                         prompt="a brass key", seed=21)
    try:
        panel.steps.value, panel.strength.value, panel.output_format.value = 6, 0.6, "png"
        panel.add_lora("https://h.example/l.safetensors", 1.5)
        result = panel.run(timeout=60)
        assert result is not None and panel.last_error is None
        saved = panel.save(tmp_path)[0]
        assert fluxnb.read_params(saved)["num_inference_steps"] == 6
        _no_secret(saved)
    finally:
        panel.close()
        client.close()
    fresh = InpaintPanel(None, image=make_test_image(), mask=make_test_mask())
    try:
        fresh.params_upload.value = ({"name": "out.png", "type": "image/png", "size": 0,
                                      "content": memoryview(saved.read_bytes()),
                                      "last_modified": datetime.now(UTC)},)
        assert fresh.last_error is None and "out.png" in fresh.params_info.value
        assert (fresh.prompt.value, fresh.steps.value, fresh.strength.value) == ("a brass key", 6, 0.6)
        assert fresh.seed_mode.value == "fixed" and fresh.seed.value == 21
        assert fresh.loras == [("https://h.example/l.safetensors", 1.5)]
        assert fresh.params() == {k: v for k, v in fluxnb.read_params(saved).items()
                                  if k not in ("sync_mode",)}
        plain = io.BytesIO()
        make_test_image().save(plain, format="PNG")
        fresh.params_upload.value = ({"name": "plain.png", "type": "image/png", "size": 0,
                                      "content": memoryview(plain.getvalue()),
                                      "last_modified": datetime.now(UTC)},)
        assert "no fluxnb parameters" in fresh.error.value
    finally:
        fresh.close()


def test_sweep_images_carry_their_cell(server_factory: Any, tmp_path: Path) -> None:
    fast = server_factory(engine="preview", workers=2)
    with QueueClient(fast.base_url) as client:
        s = fluxnb.sweep(client, {**small_inputs(), "output_format": "png"}, tmp_path,
                         steps=[2, 3], seeds="per_cell", cache=False, progress=None, verbose=False)
    rows = s.frame
    assert len(rows) == 2
    for _, row in rows.iterrows():
        path = Path(row["file"])
        params = fluxnb.read_params(path)
        assert params["num_inference_steps"] == row["num_inference_steps"]
        assert params["seed"] == row["seed"] and params["prompt"] == "a test"
        full = fluxnb.read_params(path, full=True)
        assert full["inputs"]["image_url"]["sha256"]
        _no_secret(path)
