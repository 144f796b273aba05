"""The panel's "code" toggle: ``panel.code()`` / ``panel.cli_command()`` follow the controls, the
shown code sends what the panel sends (run against a real loopback server), the command parses
into the same fields, and no key is ever written."""

from __future__ import annotations

import asyncio
import html
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fluxnb import cli
from fluxnb.client import AsyncQueueClient, QueueClient
from fluxnb.server import BackgroundServer
from fluxnb.widgets import InpaintPanel
from tests.conftest import make_test_image, make_test_mask

PROMPT = "a small 'gold' anchor pin"
LORA = "https://example.com/loras/style.safetensors"


def _inputs(tmp_path: Path) -> tuple[str, str]:
    image, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    make_test_image().save(image)
    make_test_mask().save(mask)
    return str(image), str(mask)


def _set(panel: InpaintPanel) -> None:
    panel.steps.value = 12
    panel.guidance.value = 7.26           # snapped to 7.3, as the panel sends it
    panel.strength.value = 0.5
    panel.num_images.value = 2
    panel.output_format.value = "png"
    panel.safety.value = False
    panel.add_lora(LORA, 0.8)


def _command_words(command: str) -> list[str]:
    """The words a shell makes of the command: comments dropped, ``\\``-newlines joined."""
    body = "\n".join(line for line in command.splitlines() if not line.startswith("#"))
    return shlex.split(body.replace("\\\n", " "))


def shown(panel: InpaintPanel) -> str:
    """The text of the code view, as the browser shows it."""
    return html.unescape(panel.code_view.value)


def _run_panel(base_url: str, panel_kw: dict[str, Any]) -> InpaintPanel:
    async def main() -> InpaintPanel:
        async with AsyncQueueClient(base_url, poll_interval=0.05) as client:
            panel = InpaintPanel(client, prompt=PROMPT, **panel_kw)
            _set(panel)
            await panel.arun()
            return panel

    return asyncio.run(main())


def _exec(code: str, namespace: dict[str, Any]) -> Any:
    try:
        exec(compile(code, "<panel.code()>", "exec"), namespace)
    finally:
        if "client" in namespace:
            namespace["client"].close()
    return namespace["result"]


# -- the text follows the controls ---------------------------------------------------------------


def test_the_code_view_follows_the_sliders_and_the_toggle(tmp_path: Path) -> None:
    image, mask = _inputs(tmp_path)
    panel = InpaintPanel(image=image, mask=mask, prompt=PROMPT, seed=7)
    assert panel.code_toggle.description == "code" and panel.code_view.layout.display == "none"
    panel.code_toggle.value = True
    assert panel.code_view.layout.display == ""
    before = shown(panel)
    assert "num_inference_steps=28" in before and "--steps 28" in before
    panel.steps.value = 12
    assert "num_inference_steps=12" in shown(panel) and "--steps 12" in shown(panel)
    panel.guidance.value = 7.26
    assert "guidance_scale=7.3" in panel.code() and "--guidance 7.3" in panel.cli_command()
    panel.add_lora(LORA, 0.8)
    assert "'scale': 0.8" in shown(panel)
    panel.lora_rows.children[0].children[1].value = 0.5        # the LoRA row's scale slider
    assert "'scale': 0.5" in shown(panel) and f"{LORA}@0.5" in panel.cli_command()
    panel.mask_path.value = str(tmp_path / "other.png")
    assert "other.png" in shown(panel)
    panel.prompt.value = ""
    assert "not runnable yet" in shown(panel) and "prompt" in shown(panel)
    panel.code_toggle.value = False
    assert panel.code_view.layout.display == "none"
    assert panel.widget.children.index(panel.code_toggle) < panel.widget.children.index(
        next(c for c in panel.widget.children if panel.run_button in getattr(c, "children", ())))


def test_a_random_seed_is_left_out_and_said(live_server: BackgroundServer, tmp_path: Path) -> None:
    image, mask = _inputs(tmp_path)
    panel = _run_panel(live_server.base_url, {"image": image, "mask": mask})   # random seed mode
    drawn = live_server.service.get(panel.job.request_id).params["seed"]
    code = panel.code()
    assert "seed=" not in code.replace("drew seed=", "") and "--seed" not in \
        _command_words(panel.cli_command())
    assert f"# seed: random, a new one each Run; the last run drew seed={drawn}" in code
    assert "add --seed N to repeat one" in panel.cli_command()
    panel.reuse_seed()
    assert f"    seed={drawn}," in panel.code() and f"--seed {drawn}" in panel.cli_command()


# -- the code sends what the panel sends -----------------------------------------------------------


@pytest.mark.parametrize("inputs", ["paths", "objects"])
def test_the_shown_code_sends_what_the_panel_sent(live_server: BackgroundServer, tmp_path: Path,
                                                  inputs: str) -> None:
    image_path, mask_path = _inputs(tmp_path)
    if inputs == "paths":
        kw: dict[str, Any] = {"image": image_path, "mask": mask_path, "seed": 1234}
        namespace: dict[str, Any] = {}
    else:   # a PIL image and an array, named by the user
        photo, hole = Image.open(image_path), np.asarray(Image.open(mask_path))
        kw = {"image": photo, "mask": hole, "seed": 1234, "image_name": "photo", "mask_name": "hole"}
        namespace = {"photo": photo, "hole": hole}
    panel = _run_panel(live_server.base_url, kw)
    code = panel.code()
    if inputs == "paths":
        assert f"image_url={image_path!r}" in code and f"mask_url={mask_path!r}" in code
    else:
        assert "image_url=photo," in code and "mask_url=hole," in code
        assert "# photo: the PIL image 96x64 passed to the panel as photo, opened from" in code
        assert "# hole: the array 96x64 passed to the panel as hole" in code
    assert f"fluxnb.connect({live_server.base_url!r})" in code
    result = _exec(code, namespace)
    by_panel = live_server.service.get(panel.job.request_id)
    by_code = live_server.service.get(result.request_id)
    assert by_panel is not None and by_code is not None and by_code.ok
    drop = ("image_url", "mask_url")
    sent = {k: v for k, v in by_panel.params.items() if k not in drop}
    assert {k: v for k, v in by_code.params.items() if k not in drop} == sent
    assert sent["seed"] == 1234 and sent["guidance_scale"] == 7.3 and sent["num_images"] == 2
    assert sent["enable_safety_checker"] is False and sent["loras"] == [{"path": LORA, "scale": 0.8}]
    # same inputs, same parameters: the (seeded) preview engine paints the same pixels
    assert [np.asarray(a).tolist() for a in result.pil_images()] == [
        np.asarray(a).tolist() for a in panel.result.pil_images()]


def test_the_command_parses_into_the_fields_the_panel_sends(tmp_path: Path) -> None:
    image, mask = _inputs(tmp_path)
    with QueueClient("http://127.0.0.1:9/") as client:
        panel = InpaintPanel(client, image=image, mask=mask, prompt=PROMPT, seed=1234)
        _set(panel)
        words = _command_words(panel.cli_command())
    assert words[:2] == ["fluxnb", "run"]
    args = cli.build_parser().parse_args(words[1:])
    assert (args.image, args.mask, args.base_url) == (image, mask, "http://127.0.0.1:9")
    assert cli._job_fields(args) == panel.params()
    panel.safety.value = True
    args = cli.build_parser().parse_args(_command_words(panel.cli_command())[1:])
    assert cli._job_fields(args)["enable_safety_checker"] is True


# -- inputs and secrets ---------------------------------------------------------------------------


def test_inputs_that_are_no_paths_become_variables_with_a_note(tmp_path: Path) -> None:
    panel = InpaintPanel(image=make_test_image(), mask=make_test_mask(), prompt=PROMPT)
    code, command = panel.code(), panel.cli_command()
    assert "image_url=image," in code and "mask_url=mask," in code
    assert "# image: the PIL image 96x64 passed to the panel" in code
    assert "--image image.png" in command and "save it as image.png first" in command
    panel.open_painter()
    assert "# mask: painted in the panel: panel.painter.mask" in panel.code()
    data = Path(_inputs(tmp_path)[0]).read_bytes()
    panel.image_upload.value = ({"name": "cat.png", "type": "image/png", "size": len(data),
                                 "content": memoryview(data), "last_modified": datetime.now(UTC)},)
    assert "# image: uploaded in the panel (cat.png)" in panel.code()
    with pytest.raises(ValueError, match="image_name='my photo' must be a Python variable name"):
        InpaintPanel(image_name="my photo")


def test_no_key_is_ever_in_the_text(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLUXNB_KEY", "fluxnb-secret-1")
    monkeypatch.setenv("FAL_KEY", "falid:fal-secret-2")
    image, mask = _inputs(tmp_path)
    with QueueClient("http://ada:pw-secret-3@gpu-box.lab:8000", key="client-secret-4") as client:
        panel = InpaintPanel(client, image=image, mask=mask, prompt=PROMPT, seed=1)
        panel.code_toggle.value = True
        texts = (panel.code(), panel.cli_command(), panel.code_view.value)
    for text in texts:
        for secret in ("fluxnb-secret-1", "fal-secret-2", "pw-secret-3", "client-secret-4", "--key"):
            assert secret not in text
    assert "fluxnb.connect('http://gpu-box.lab:8000')" in texts[0]
    assert "--base-url http://gpu-box.lab:8000" in texts[1]
    fal = InpaintPanel(None, image=image, mask=mask, prompt=PROMPT, seed=1)   # fal / connect()
    assert "client = fluxnb.connect()  #" in fal.code() and "--base-url" not in fal.cli_command()
