"""InpaintPanel without a browser: real loopback servers, real clicks, real asyncio tasks.

Clicks happen inside ``asyncio.run(...)`` so a loop is running, as in a kernel. Every test checks
what the panel shows *and* what reached the server; ``caplog`` catches errors that ipywidgets
would swallow in a callback ("Exception in callback").
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image

import fluxnb
from fluxnb import schema
from fluxnb.client import AsyncQueueClient, QueueClient
from fluxnb.server import BackgroundServer, ServerConfig
from fluxnb.widgets import InpaintPanel, MaskPainter
from fluxnb.widgets.panel_model import build_params, slider_spec, snap
from tests.conftest import make_test_image, make_test_mask
from tests.support import aeventually, eventually

PROMPT = "a small gold anchor pin"


@pytest.fixture(scope="module")
def slow_server() -> Iterator[BackgroundServer]:
    """The null engine at 3 s per image in 10 logged steps: long enough to watch and cancel."""
    server = BackgroundServer(ServerConfig(engine="null", engine_options={"delay": 3.0}, workers=1,
                                           port=0)).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_swallowed_callback_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert "Exception in callback" not in caplog.text
    assert "exception was never retrieved" not in caplog.text


def panel_for(client: Any, **kwargs: Any) -> InpaintPanel:
    kwargs.setdefault("image", make_test_image())
    kwargs.setdefault("mask", make_test_mask())
    kwargs.setdefault("prompt", PROMPT)
    return InpaintPanel(client, **kwargs)


def with_client(base_url: str, scenario: Callable[[AsyncQueueClient], Awaitable[Any]], **kw: Any) -> Any:
    async def main() -> Any:
        async with AsyncQueueClient(base_url, poll_interval=0.05, **kw) as client:
            return await scenario(client)

    return asyncio.run(main())


def submits(server: BackgroundServer) -> int:
    return int(server.service.stats["requests"]["submit"])


# -- sliders come from the schema ---------------------------------------------------------------


def test_sliders_take_bounds_steps_and_defaults_from_the_schema() -> None:
    panel = InpaintPanel()
    for name, widget in (("num_inference_steps", panel.steps), ("guidance_scale", panel.guidance),
                         ("strength", panel.strength), ("num_images", panel.num_images)):
        spec = schema.INPUT_FIELDS[name]
        assert (widget.min, widget.max, widget.step, widget.value) == (
            spec.minimum, spec.maximum, spec.step, spec.default), name
        assert widget.continuous_update is False
        assert widget.description == spec.label
    assert list(panel.output_format.options) == list(schema.INPUT_FIELDS["output_format"].choices)
    assert panel.output_format.value == schema.INPUT_FIELDS["output_format"].default
    assert panel.safety.value is schema.INPUT_FIELDS["enable_safety_checker"].default
    panel.add_lora("https://x/style.safetensors")
    scale = panel.lora_rows.children[0].children[1]
    assert (scale.min, scale.max, scale.step, scale.value) == (
        schema.LORA_SCALE.minimum, schema.LORA_SCALE.maximum, schema.LORA_SCALE.step,
        schema.LORA_SCALE.default)


def test_a_schema_change_moves_the_sliders(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = dataclasses.replace(schema.INPUT_FIELDS["num_inference_steps"], maximum=80, default=40)
    monkeypatch.setitem(schema.INPUT_FIELDS, "num_inference_steps", changed)   # type: ignore[index]
    panel = InpaintPanel()
    assert (panel.steps.max, panel.steps.value) == (80, 40)
    assert slider_spec("num_inference_steps")["max"] == 80


def test_values_are_snapped_to_the_schema_step_before_sending() -> None:
    assert snap("guidance_scale", 7.26) == 7.3 and snap("strength", 0.123) == 0.12
    assert snap("num_inference_steps", 12.4) == 12
    params = build_params({"prompt": "p", "guidance_scale": 7.26, "seed": None},
                          loras=[("https://x/a.safetensors", 0.333), ("  ", 1.0)])
    assert params == {"prompt": "p", "guidance_scale": 7.3,
                      "loras": [{"path": "https://x/a.safetensors", "scale": 0.35}]}


# -- running ------------------------------------------------------------------------------------


def test_run_shows_the_result_and_the_server_got_the_slider_values(live_server: BackgroundServer) -> None:
    async def scenario(client: AsyncQueueClient) -> InpaintPanel:
        panel = panel_for(client, seed=1234)
        panel.steps.value = 12
        panel.guidance.value = 7.26            # the browser would snap; Python does not
        panel.strength.value = 0.5
        panel.output_format.value = "png"
        panel.safety.value = False
        panel.add_lora("https://example.com/loras/style.safetensors", 0.8)
        t0 = time.monotonic()
        panel.run_button.click()
        assert time.monotonic() - t0 < 0.5 and panel.running       # the click returns at once
        assert panel.run_button.disabled and not panel.cancel_button.disabled
        await panel.task
        return panel

    panel = with_client(live_server.base_url, scenario)
    job = live_server.service.get(panel.job.request_id)
    assert job is not None and job.ok
    sent = job.params
    assert sent["num_inference_steps"] == 12 and sent["guidance_scale"] == 7.3
    assert sent["strength"] == 0.5 and sent["seed"] == 1234 and sent["output_format"] == "png"
    assert sent["enable_safety_checker"] is False and sent["prompt"] == PROMPT
    assert sent["loras"] == [{"path": "https://example.com/loras/style.safetensors", "scale": 0.8}]
    # what the panel shows
    assert "done in" in panel.status.value and "seed 1234" in panel.status.value
    assert panel.error.value == ""
    png = panel.result_image.value
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert panel.result_box.children == (panel.result_image, panel.result_caption)
    assert panel.progress.value == panel.progress.max > 1           # step logs drove the bar
    assert panel.result is not None and panel.result.input_image is not None
    assert not panel.run_button.disabled and panel.cancel_button.disabled
    # the history
    frame = panel.history
    row = frame.iloc[-1]
    assert (row["status"], row["steps"], row["guidance"], row["seed"]) == ("completed", 12, 7.3, 1234)
    assert row["request_id"] == panel.job.request_id and row["seconds"] > 0
    assert "style.safetensors×0.8" in row["loras"]
    assert "completed" in panel.history_html.value


def test_random_seed_is_drawn_sent_and_recorded(live_server: BackgroundServer) -> None:
    async def scenario(client: AsyncQueueClient) -> InpaintPanel:
        panel = panel_for(client)
        assert panel.seed_mode.value == "random" and panel.seed.disabled
        result = await panel.arun()
        assert result is not None
        return panel

    panel = with_client(live_server.base_url, scenario)
    seed = live_server.service.get(panel.job.request_id).params["seed"]
    assert isinstance(seed, int)
    assert panel.history.iloc[-1]["seed"] == seed == panel.result.seed


def test_a_random_seed_is_written_back_and_can_be_reused(live_server: BackgroundServer) -> None:
    async def scenario(client: AsyncQueueClient) -> tuple[InpaintPanel, str, str]:
        panel = panel_for(client)
        assert panel.reuse_seed_button.layout.display == "none"      # nothing to reuse yet
        await panel.arun()
        first = panel.job.request_id
        seed = panel.result.seed
        # the seed used is shown (in the greyed-out seed box and the status line) ...
        assert panel.seed.value == seed == panel.last_seed and panel.seed.disabled
        assert f"seed {seed} (random)" in panel.status.value
        # ... and one click makes it the fixed seed of the next run
        assert panel.reuse_seed_button.layout.display != "none"
        assert str(seed) in panel.reuse_seed_button.description
        panel.reuse_seed_button.click()
        assert panel.seed_mode.value == "fixed" and not panel.seed.disabled
        assert panel.values()["seed"] == seed and panel.reuse_seed_button.layout.display == "none"
        await panel.arun()
        return panel, first, panel.job.request_id

    panel, first, second = with_client(live_server.base_url, scenario)
    sent = [live_server.service.get(rid).params["seed"] for rid in (first, second)]
    assert sent[0] == sent[1] == panel.last_seed
    assert panel.reuse_seed_button.layout.display == "none"         # a fixed seed: nothing to offer


def test_cancel_stops_the_job_on_the_server(slow_server: BackgroundServer) -> None:
    async def scenario(client: AsyncQueueClient) -> tuple[InpaintPanel, float]:
        panel = panel_for(client)
        ticks = 0

        async def ticker() -> None:        # the loop (the kernel) stays free while the job runs
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        tick_task = asyncio.create_task(ticker())
        t0 = time.monotonic()
        panel.run_button.click()
        await aeventually(lambda: panel.progress.value >= 1 and "running" in panel.status.value)
        assert ticks > 5
        panel.cancel_button.click()
        with pytest.raises(asyncio.CancelledError):
            await panel.task
        tick_task.cancel()
        return panel, time.monotonic() - t0

    cancelled_before = slow_server.service.stats["jobs"]["cancelled"] if "cancelled" in \
        slow_server.service.stats["jobs"] else 0
    panel, elapsed = with_client(slow_server.base_url, scenario)
    assert elapsed < 2.9                                     # before the 3 s job would have ended
    assert panel.cancel_outcome == "CANCELLATION_REQUESTED"
    job = slow_server.service.get(panel.job.request_id)
    eventually(lambda: job.state == "COMPLETED", 5, lambda: f"the job is {job.state}")
    assert job.state == "COMPLETED" and job.error_type == "request_cancelled" and job.result is None
    stats = slow_server.service.stats
    assert stats["requests"]["cancel"] >= 1 and stats["jobs"].get("cancelled", 0) > cancelled_before
    assert "cancelled" in panel.status.value and panel.result is None
    assert panel.progress.value == 0                     # reset, not frozen at the last step
    assert panel.history.iloc[-1]["status"] == "cancelled"
    assert not panel.run_button.disabled and panel.cancel_button.disabled


def test_cancel_with_nothing_running_says_so() -> None:
    panel = InpaintPanel()
    panel.cancel_button.click()
    assert "nothing to cancel" in panel.status.value


def test_queue_position_is_shown(slow_server: BackgroundServer) -> None:
    async def scenario(client: AsyncQueueClient) -> list[str]:
        first, second = panel_for(client), panel_for(client)
        first.run_button.click()
        await aeventually(lambda: first.job is not None)
        seen: list[str] = []
        second.status.observe(lambda c: seen.append(c["new"]), names="value")
        second.run_button.click()
        await aeventually(lambda: second.queue_position is not None)
        for p in (second, first):
            p.cancel_button.click()
        for p in (first, second):
            with pytest.raises(asyncio.CancelledError):
                await p.task
        return seen

    seen = with_client(slow_server.base_url, scenario)
    assert any("in queue: position 0" in s for s in seen)


# -- errors are shown, never swallowed ------------------------------------------------------------


def test_out_of_range_value_is_shown_and_nothing_is_sent(live_server: BackgroundServer) -> None:
    async def scenario(client: AsyncQueueClient) -> InpaintPanel:
        panel = panel_for(client)
        panel.steps.max = 500            # a widget tampered with in the browser or in code
        panel.steps.value = 100
        panel.run_button.click()
        assert panel.task is None
        return panel

    before = submits(live_server)
    panel = with_client(live_server.base_url, scenario)
    assert submits(live_server) == before
    assert "ValidationError" in panel.error.value
    assert "num_inference_steps=100 is out of range: allowed 1 to 50" in panel.error.value
    assert "not sent" in panel.status.value and not panel.run_button.disabled


@pytest.mark.parametrize("prompt", ["", "  ", "\n"])
def test_the_panel_and_the_client_share_the_schemas_prompt_rule(prompt: str) -> None:
    """One rule: the panel's error for a blank prompt is the schema's (what the client raises)."""
    with pytest.raises(fluxnb.ValidationError) as panel_error:
        build_params({"prompt": prompt})
    with pytest.raises(fluxnb.ValidationError) as schema_error:
        schema.validate_input({"prompt": prompt, "image_url": "https://x/i.png",
                               "mask_url": "https://x/m.png"})
    assert panel_error.value.errors == schema_error.value.errors
    assert panel_error.value.fields == ["prompt"]


def test_empty_prompt_and_bad_mask_are_shown() -> None:
    panel = panel_for(None, prompt="   ")
    panel.run_button.click()
    assert "prompt is empty" in panel.error.value
    panel.prompt.value = "ok"
    panel = panel_for(None, mask=Image.new("L", (10, 10)))
    panel.run_button.click()
    assert "MaskMismatchError" in panel.error.value and "96x64" in panel.error.value
    assert panel.client is None                 # nothing connected, nothing sent
    panel.image_path.value = "/nonexistent/photo.png"
    assert "photo.png" in panel.inputs_info.value
    with pytest.raises(FileNotFoundError):
        asyncio.run(panel.arun())
    assert "FileNotFoundError" in panel.error.value


def test_http_error_is_shown(server_factory: Callable[..., BackgroundServer]) -> None:
    server = server_factory(engine="preview", key="the-server-key")

    async def scenario(client: AsyncQueueClient) -> InpaintPanel:
        panel = panel_for(client)
        panel.run_button.click()
        with pytest.raises(fluxnb.QueueHTTPError):
            await panel.task
        return panel

    panel = with_client(server.base_url, scenario, key="a-wrong-key", max_retries=0)
    assert "QueueHTTPError" in panel.error.value and "401" in panel.error.value
    assert panel.history.iloc[-1]["status"] == "failed"
    assert "failed" in panel.status.value
    shown = panel.error.value + panel.status.value + panel.history.to_string() + repr(panel)
    assert "a-wrong-key" not in shown and "the-server-key" not in shown


def test_job_failure_is_shown(slow_server: BackgroundServer) -> None:
    async def scenario(client: AsyncQueueClient) -> InpaintPanel:
        panel = panel_for(client)
        panel.run_button.click()
        await aeventually(lambda: panel.job is not None and "running" in panel.status.value)
        slow_server.service.cancel(panel.job.request_id)     # someone else stops it on the server
        with pytest.raises(fluxnb.JobFailedError):
            await panel.task
        return panel

    panel = with_client(slow_server.base_url, scenario)
    assert "JobCancelledError" in panel.error.value and panel.job.request_id in panel.error.value
    assert panel.history.iloc[-1]["status"] == "failed"
    assert "JobCancelledError" in panel.history.iloc[-1]["error"]


def test_a_second_run_while_running_is_refused_in_the_panel(slow_server: BackgroundServer) -> None:
    async def scenario(client: AsyncQueueClient) -> InpaintPanel:
        panel = panel_for(client)
        panel.run_button.click()
        first = panel.task
        panel.run_button.click()                 # e.g. a double click
        assert panel.task is first and "already running" in panel.error.value
        panel.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return panel

    with_client(slow_server.base_url, scenario)


# -- other clients, inputs and modes ------------------------------------------------------------


def test_a_sync_client_works_too(live_server: BackgroundServer) -> None:
    async def scenario() -> InpaintPanel:
        with QueueClient(live_server.base_url) as client:
            panel = panel_for(client, seed=5)
            panel.steps.value = 3
            assert await panel.arun() is not None
            return panel

    panel = asyncio.run(scenario())
    assert live_server.service.get(panel.job.request_id).params["num_inference_steps"] == 3
    assert "done in" in panel.status.value


def test_script_mode_runs_on_a_background_loop(live_server: BackgroundServer) -> None:
    panel = panel_for(None, seed=9)
    import os

    os.environ["FLUXNB_BASE_URL"] = live_server.base_url     # removed again by _clean_env
    try:
        result = panel.run(timeout=30)
        assert result is not None and result.seed == 9
        assert panel.client is not None and panel.client.base_url == live_server.base_url
        assert panel.history.iloc[-1]["status"] == "completed"
    finally:
        panel.close()
        del os.environ["FLUXNB_BASE_URL"]


def test_run_in_a_running_loop_points_to_arun() -> None:
    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="await panel.arun"):
            panel_for(None).run()

    asyncio.run(scenario())


def test_the_painted_mask_is_what_is_sent(live_server: BackgroundServer) -> None:
    image = make_test_image(120, 80)
    painter = MaskPainter(image, widgets=False)
    painter.paint([(20, 40), (60, 40)], radius=10)

    async def scenario(client: AsyncQueueClient) -> InpaintPanel:
        panel = panel_for(client, image=image, mask=painter)
        assert "mask covers" in panel.inputs_info.value
        assert await panel.arun() is not None
        return panel

    panel = with_client(live_server.base_url, scenario)
    assert panel.result.input_mask.tobytes() == painter.mask.tobytes()


def test_paint_mask_button_opens_a_painter_the_panel_uses() -> None:
    panel = panel_for(None)
    panel.paint_button.click()
    assert isinstance(panel.painter, MaskPainter) and panel.painter_box.children == (panel.painter.widget,)
    assert panel.painter.coverage == pytest.approx(fluxnb.mask_coverage(make_test_mask()))
    panel.painter.clear()
    panel.painter.paint([(5, 5)], radius=3)
    _, mask = panel.inputs()
    assert mask.tobytes() == panel.painter.mask.tobytes()


def test_path_and_upload_inputs(tmp_path: Any) -> None:
    path = tmp_path / "photo.png"
    make_test_image(64, 64).save(path)
    panel = panel_for(None, image=None, mask=None)
    assert "no image" in panel.inputs_info.value
    panel.image_path.value = str(path)
    panel.mask_upload.value = ({"name": "m.png", "type": "image/png", "size": 0,
                                "content": memoryview(_png(make_test_mask(32, 32))),
                                "last_modified": datetime.now(UTC)},)
    image, mask = panel.inputs()
    assert image.size == mask.size == (64, 64)
    assert "image 64x64" in panel.inputs_info.value


def _png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_history_keeps_the_last_runs(live_server: BackgroundServer) -> None:
    async def scenario(client: AsyncQueueClient) -> InpaintPanel:
        panel = panel_for(client, history_size=2, seed=1)
        for steps in (2, 3, 4):
            panel.steps.value = steps
            await panel.arun()
        return panel

    frame = with_client(live_server.base_url, scenario).history
    assert list(frame["steps"]) == [3, 4] and list(frame["status"]) == ["completed"] * 2


def test_panel_names_are_public() -> None:
    assert fluxnb.InpaintPanel is InpaintPanel and fluxnb.MaskPainter is MaskPainter


# -- what the panel shows: layout, inputs, stale results, masks that do nothing --------------------


def _contains(box: Any, widget: Any) -> bool:
    return box is widget or any(_contains(c, widget) for c in getattr(box, "children", ()))


def _children_index(panel: InpaintPanel, widget: Any) -> int:
    """Which row of the panel's column holds ``widget`` (at any depth)."""
    for i, child in enumerate(panel.widget.children):
        if _contains(child, widget):
            return i
    raise AssertionError(f"{widget!r} is not in the panel")


def test_parameter_columns_wrap_instead_of_clipping_the_readouts() -> None:
    panel = InpaintPanel()
    row = panel.widget.children[_children_index(panel, panel.seed_mode)]
    sliders, options = row.children
    assert panel.steps in sliders.children and "fluxnb-sliders" in sliders._dom_classes
    assert row.layout.flex_flow == "row wrap"              # a narrow page moves the seed column down
    assert sliders.layout.flex == options.layout.flex == "0 0 auto"     # ... never squeezes it
    seed_row = options.children[0]
    assert seed_row.children == (panel.seed, panel.seed_mode)
    assert seed_row.layout.flex_flow == "row nowrap" and panel.seed_mode.layout.flex == "0 0 auto"


def test_paint_mask_opens_the_painter_under_the_inputs() -> None:
    panel = panel_for(None)
    panel.paint_button.click()
    where = _children_index(panel, panel.painter.widget)
    assert where == _children_index(panel, panel.inputs_info) + 1            # just under the inputs
    assert where < _children_index(panel, panel.steps) < _children_index(panel, panel.run_button)
    assert where < _children_index(panel, panel.history_html)


def test_inputs_from_code_are_named_and_previewed_before_the_first_run(tmp_path: Any) -> None:
    panel = panel_for(None)                                  # PIL image and mask from code
    assert panel.image_path.value == "" and panel.image_path.placeholder == "from code: PIL image 96x64"
    assert "from code: PIL image 96x64" in panel.mask_path.placeholder
    assert "fluxnb-from-code" in panel.image_path._dom_classes
    assert "image 96x64 (PIL image)" in panel.inputs_info.value
    preview = Image.open(__import__("io").BytesIO(panel.input_preview.value))
    assert panel.input_preview.layout.display != "none"
    assert preview.height == 88 and preview.width == 2 * 132 + 6        # before | mask over it
    assert preview.getpixel((2 * 132 + 6 - 66, 44)) != preview.getpixel((66, 44))   # tinted hole
    path = tmp_path / "cat.png"
    make_test_image().save(path)
    by_path = panel_for(None, image=path, mask=MaskPainter(make_test_image(), make_test_mask(),
                                                           widgets=False))
    assert by_path.image_path.value == str(path) and "cat.png" in by_path.inputs_info.value
    assert "from code: painted mask 96x64" in by_path.mask_path.placeholder
    by_path.image_path.value = ""
    by_path.mask_path.value = str(path)                         # typed: the hint comes back
    assert by_path.mask_path.placeholder.startswith("path or URL")


def test_an_error_marks_the_previous_result_stale(server_factory: Callable[..., BackgroundServer]
                                                  ) -> None:
    server = server_factory(engine="null", engine_options={"delay": 0.3}, workers=1)

    async def scenario(client: AsyncQueueClient) -> InpaintPanel:
        panel = panel_for(client, seed=3)
        await panel.arun()
        assert not panel.result_stale and panel.result_box.children[0] is panel.result_image
        panel.run_button.click()                       # this run fails on the server
        await aeventually(lambda: panel.job is not None and "running" in panel.status.value)
        server.service.cancel(panel.job.request_id)
        with pytest.raises(fluxnb.JobFailedError):
            await panel.task
        return panel

    panel = with_client(server.base_url, scenario)
    assert panel.result_stale and panel.result_box.children[0] is panel.stale_note
    assert "stale" in panel.stale_note.value and "failed" in panel.stale_note.value
    assert "fluxnb-stale" in panel.result_image._dom_classes and panel.progress.bar_style == "danger"
    assert "JobCancelledError" in panel.error.value


def test_the_result_caption_is_html_text(live_server: BackgroundServer,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from fluxnb.widgets import panel as panel_module

    strips: list[dict[str, Any]] = []
    real = panel_module.before_mask_after

    def spy(*args: Any, **kwargs: Any) -> Image.Image:
        strips.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(panel_module, "before_mask_after", spy)

    async def scenario(client: AsyncQueueClient) -> InpaintPanel:
        panel = panel_for(client, seed=77)
        panel.steps.value = 6
        await panel.arun()
        return panel

    panel = with_client(live_server.base_url, scenario)
    assert strips and all(not kw.get("caption") for kw in strips)      # no text in the raster
    assert "steps=6" in panel.result_caption.value and "seed=77" in panel.result_caption.value
    assert "fluxnb-caption" in panel.result_caption._dom_classes


def test_an_empty_mask_disables_run_and_says_why() -> None:
    red_on_black = Image.new("RGB", (96, 64))
    red_on_black.paste((255, 0, 0), (30, 20, 60, 40))          # luminance 76: repaints nothing
    panel = panel_for(None, mask=red_on_black)
    assert panel.run_button.disabled and panel.run_blocked is not None
    assert "Run is disabled" in panel.status.value and "brightest mask pixel is 76" in panel.status.value
    assert "mask_threshold" in panel.status.value
    with pytest.raises(fluxnb.ValidationError, match="brightest mask pixel is 76") as caught:
        panel.start()                                    # from code too: refused, nothing sent
    assert "mask_url" in caught.value.fields and panel.task is None and panel.client is None
    panel.paint_button.click()                           # paint the area: Run comes back
    assert panel.run_button.disabled
    panel.painter.paint([(48, 32)], radius=6)
    assert not panel.run_button.disabled and panel.run_blocked is None
    assert "ready" in panel.status.value
    panel.painter.clear()
    assert panel.run_button.disabled and "brightest mask pixel is 0" in panel.status.value
