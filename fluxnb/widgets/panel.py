"""``InpaintPanel``: an ipywidgets panel that runs inpainting jobs and shows what happens.

Sliders (bounds, steps, defaults) come from :data:`fluxnb.schema.INPUT_FIELDS`. **Run** schedules
the job as an asyncio task on the kernel's running loop (so the kernel stays responsive and
**Cancel** works on ipykernel 6 and 7); without a running loop (a script) the job runs on a
background loop thread. Every error (validation, HTTP, job failure) is shown inside the panel:
ipywidgets would otherwise swallow exceptions raised in button callbacks.

>>> panel = fluxnb.InpaintPanel(image=image, mask=mask)     # doctest: +SKIP
>>> panel                                                 # shows the panel   # doctest: +SKIP
>>> result = await panel.arun()                           # or click Run      # doctest: +SKIP
>>> panel.history                                         # a DataFrame       # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import inspect
import logging
import os
import random
from typing import Any

from PIL import Image

from .._aio import BackgroundLoop, run_blocking, wait_future
from ..errors import ValidationError
from ..figures import before_mask_after
from ..images import load_image, load_mask
from ..masks import fit_mask
from ..protocol import InProgress, Queued, Status, progress_from_logs
from ..result import InpaintResult
from ..schema import INPUT_FIELDS, SEED_MAX
from .history import RunHistory, RunRecord
from .painter import MaskPainter
from .panel_model import build_params, describe_status, mask_problem, slider_spec
from .panel_view import (
    PANEL_CSS,
    describe_source,
    from_code_placeholder,
    input_preview,
    png_bytes,
    stale_note_html,
)

__all__ = ["InpaintPanel"]

log = logging.getLogger("fluxnb.panel")

_STYLE = {"description_width": "90px"}
#: Rows that wrap instead of squeezing (a squeezed column clips its sliders' readouts).
_WRAP = {"flex_flow": "row wrap", "align_items": "flex-start"}
#: Height of the before / mask preview of the inputs shown before a run.
_PREVIEW_HEIGHT = 88
_IMAGE_HINT = "path or URL (or upload)"
_MASK_HINT = "path or URL (or upload, or paint)"
#: Longest side of the before / mask / after tiles shown in the panel.
_TILE_HEIGHT = 256
#: Random seeds the panel draws stay below this (any int is fine; short ones are easier to read).
_RANDOM_SEED_MAX = min(SEED_MAX, 2**31 - 1)

TaskLike = asyncio.Task[Any] | concurrent.futures.Future[Any]


async def _close_after(task: TaskLike | None, client: Any) -> None:
    """Close ``client`` once ``task`` (cancelled, cancelling the job on the server) is done."""
    if isinstance(task, asyncio.Task) and not task.done():
        await asyncio.wait([task])
    await client.aclose()


def _error_text(exc: BaseException) -> str:
    """What the panel shows for an error: the type and the message (names field, value, range)."""
    name = type(exc).__name__
    if isinstance(exc, ValidationError):
        return f"{name}: {exc}"
    return f"{name}: {exc}" if str(exc) else name


def _upload_bytes(value: Any) -> bytes | None:
    """The bytes of an ipywidgets 8 FileUpload value (a tuple of dicts), or None."""
    if not value:
        return None
    item = value[0]
    content = item["content"] if isinstance(item, dict) else getattr(item, "content", None)
    return None if content is None else bytes(content)


class InpaintPanel:
    """A notebook panel for ``fal-ai/flux-lora/inpainting``: inputs, parameters, Run / Cancel,
    live status and progress, the before / mask / after result and a history of runs.

    ``client``: an ``AsyncQueueClient`` (best), a ``QueueClient``, or None for
    ``fluxnb.connect(asynchronous=True)`` on first Run. ``image``/``mask``: anything
    :func:`fluxnb.load_image` takes (path, URL, PIL, array), and the mask may be a
    :class:`~fluxnb.MaskPainter`; both can also be typed as a path or uploaded in the panel.

    Controls are attributes (``panel.steps.value = 12``); ``panel.controls`` maps schema field
    names to them. ``panel.start()`` is what Run does (returns the task), ``await
    panel.arun()`` runs and returns the result, ``panel.run()`` does so in a script,
    ``panel.cancel()`` is Cancel. ``panel.result`` is the last result, ``panel.history`` a
    DataFrame of the last runs.
    """

    def __init__(self, client: Any = None, image: Any = None, mask: Any = None, *,
                 prompt: str = "", seed: int | None = None, history_size: int = 20,
                 tile_height: int = _TILE_HEIGHT):
        import ipywidgets as W

        self._client = client
        self._own_client = False
        self._image_obj = image
        self._mask_obj = mask
        self.painter: MaskPainter | None = mask if isinstance(mask, MaskPainter) else None
        self.tile_height = tile_height
        self.task: TaskLike | None = None
        self.job: Any = None
        self.result: InpaintResult | None = None
        self.last_error: BaseException | None = None
        self.queue_position: int | None = None
        self.cancel_outcome: str | None = None
        self._history = RunHistory(history_size)
        self._record: RunRecord | None = None
        #: The panel's own loop thread, started when Run happens with no loop running (scripts).
        self._background: BackgroundLoop | None = None
        self._closing: asyncio.Task[None] | None = None

        # -- inputs
        self.prompt = W.Textarea(value=prompt, description="Prompt", style=_STYLE,
                                 placeholder="what to paint in the masked (white) area",
                                 layout=W.Layout(width="98%", height="52px"))
        self.image_path = W.Text(description="Image", style=_STYLE, continuous_update=False,
                                 placeholder=_IMAGE_HINT, layout=W.Layout(width="330px"),
                                 value=os.fspath(image) if isinstance(image, (str, os.PathLike)) else "")
        self.image_upload = W.FileUpload(accept="image/*", multiple=False, description="Upload",
                                         layout=W.Layout(width="auto"))
        self.mask_path = W.Text(description="Mask", style=_STYLE, continuous_update=False,
                                placeholder=_MASK_HINT, layout=W.Layout(width="330px"),
                                value=os.fspath(mask) if isinstance(mask, (str, os.PathLike)) else "")
        self.mask_upload = W.FileUpload(accept="image/*", multiple=False, description="Upload",
                                        layout=W.Layout(width="auto"))
        self.paint_button = W.Button(description="Paint mask", icon="paint-brush",
                                     tooltip="paint the mask over the image",
                                     layout=W.Layout(width="auto"))
        self.inputs_info = W.HTML()
        self.inputs_info.add_class("fluxnb-inputs-info")
        self.input_preview = W.Image(format="png", layout=W.Layout(display="none"))
        self.input_preview.add_class("fluxnb-input-preview")

        # -- parameters: bounds, steps and defaults from the schema
        def slider(name: str) -> Any:
            spec = slider_spec(name)
            cls = W.IntSlider if INPUT_FIELDS[name].kind == "integer" else W.FloatSlider
            extra = {} if cls is W.IntSlider else {"readout_format": ".2f"}
            return cls(description=INPUT_FIELDS[name].label, style=_STYLE, continuous_update=False,
                       **spec, **extra)

        self.steps = slider("num_inference_steps")
        self.guidance = slider("guidance_scale")
        self.strength = slider("strength")
        self.num_images = slider("num_images")
        self.seed = W.BoundedIntText(value=seed if seed is not None else 42, min=0,
                                     max=_RANDOM_SEED_MAX if seed is None else max(seed, _RANDOM_SEED_MAX),
                                     description="Seed", style=_STYLE, layout=W.Layout(width="220px"))
        self.seed_mode = W.ToggleButtons(options=["fixed", "random"],
                                         value="fixed" if seed is not None else "random",
                                         style={"button_width": "72px"},
                                         layout=W.Layout(flex="0 0 auto", width="auto"))
        self.seed_mode.add_class("fluxnb-seed-mode")
        #: The seed the last completed run used (a drawn one in random mode).
        self.last_seed: int | None = None
        self._seed_was_random = False
        self.reuse_seed_button = W.Button(description="reuse this seed", icon="repeat",
                                          tooltip="switch to a fixed seed: the one the last run used",
                                          layout=W.Layout(display="none", width="auto",
                                                          align_self="flex-start"))
        fmt = INPUT_FIELDS["output_format"]
        self.output_format = W.Dropdown(options=list(fmt.choices), value=fmt.default,
                                        description=fmt.label, style=_STYLE,
                                        layout=W.Layout(width="220px"))
        self.safety = W.Checkbox(value=bool(INPUT_FIELDS["enable_safety_checker"].default),
                                 description=INPUT_FIELDS["enable_safety_checker"].label, indent=False)
        self.lora_rows = W.VBox([])
        self.add_lora_button = W.Button(description="Add LoRA", icon="plus")
        self.controls: dict[str, Any] = {
            "prompt": self.prompt, "num_inference_steps": self.steps,
            "guidance_scale": self.guidance, "strength": self.strength,
            "num_images": self.num_images, "seed": self.seed,
            "output_format": self.output_format, "enable_safety_checker": self.safety,
        }

        # -- actions and feedback
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.cancel_button = W.Button(description="Cancel", button_style="warning", icon="stop",
                                      disabled=True)
        self.status = W.HTML(value="<b>status:</b> ready")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="", bar_style="",
                                      layout=W.Layout(width="300px"))
        self.error = W.HTML(value="")
        self.result_image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.result_image.add_class("fluxnb-result-image")
        self.result_caption = W.HTML(value="")
        self.result_caption.add_class("fluxnb-caption")
        self.stale_note = W.HTML(value="")
        #: True while the result shown is from an earlier run (the last one failed or was cancelled).
        self.result_stale = False
        self.result_box = W.VBox([], layout=W.Layout(min_height="0px"))
        #: Why Run is disabled (e.g. an empty mask), or None.
        self.run_blocked: str | None = None
        self.history_html = W.HTML(value="")
        self.painter_box = W.VBox([self.painter.widget] if self.painter and self.painter.widget else [])

        self.run_button.on_click(self._on_run_click)
        self.cancel_button.on_click(self._on_cancel_click)
        self.add_lora_button.on_click(lambda _b: self._guard(self.add_lora))
        self.paint_button.on_click(lambda _b: self._guard(self.open_painter))
        self.reuse_seed_button.on_click(lambda _b: self._guard(self.reuse_seed))
        self.image_path.observe(lambda _c: self._guard(self._inputs_changed), names="value")
        self.image_upload.observe(lambda _c: self._guard(self._inputs_changed), names="value")
        self.mask_path.observe(lambda _c: self._guard(self._inputs_changed), names="value")
        self.mask_upload.observe(lambda _c: self._guard(self._inputs_changed), names="value")
        self.seed_mode.observe(lambda _c: self._guard(self._seed_mode_changed), names="value")
        self._seed_mode_changed()

        sliders = W.VBox([self.steps, self.guidance, self.strength, self.num_images],
                         layout=W.Layout(flex="0 0 auto", margin="0 16px 0 0"))
        sliders.add_class("fluxnb-sliders")
        seed_row = W.HBox([self.seed, self.seed_mode], layout=W.Layout(flex_flow="row nowrap"))
        options = W.VBox([seed_row, self.reuse_seed_button, self.output_format, self.safety],
                         layout=W.Layout(flex="0 0 auto"))
        self.widget = W.VBox([
            W.HTML(PANEL_CSS + "<b>fluxnb</b> · FLUX + LoRA inpainting"),
            self.prompt,
            W.HBox([self.image_path, self.image_upload], layout=W.Layout(**_WRAP)),
            W.HBox([self.mask_path, self.mask_upload, self.paint_button], layout=W.Layout(**_WRAP)),
            W.HBox([self.input_preview, self.inputs_info], layout=W.Layout(**_WRAP)),
            self.painter_box,          # Paint mask opens the painter here, under the inputs
            W.HBox([sliders, options], layout=W.Layout(**_WRAP)),
            W.HBox([W.HTML("<b>LoRAs</b>"), self.add_lora_button]),
            self.lora_rows,
            W.HBox([self.run_button, self.cancel_button, self.progress]),
            self.status,
            self.error,
            self.result_box,
            self.history_html,
        ], layout=W.Layout(border="1px solid #ddd", padding="6px"))
        self.widget.add_class("fluxnb-panel")
        self._guard(self._inputs_changed)

    # -- display -----------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        state = "running" if self.running else "idle"
        return f"InpaintPanel({state}, {len(self._history)} runs)"

    # -- values --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def history(self) -> Any:
        """The last runs as a pandas DataFrame (parameters, request id, status, seconds, seed)."""
        return self._history.to_frame()

    @property
    def client(self) -> Any:
        """The client (None until the first run when none was given)."""
        return self._client

    def add_lora(self, path: str = "", scale: float | None = None) -> None:
        """Add a LoRA row (weights path or URL, and a scale slider from the schema)."""
        import ipywidgets as W

        spec = slider_spec("lora_scale")
        if scale is not None:
            spec["value"] = scale
        path_box = W.Text(value=path, placeholder="LoRA weights: URL or path",
                          layout=W.Layout(width="360px"))
        scale_slider = W.FloatSlider(description="scale", continuous_update=False,
                                     readout_format=".2f", **spec)
        remove = W.Button(description="", icon="times", tooltip="remove this LoRA",
                          layout=W.Layout(width="36px"))
        row = W.HBox([path_box, scale_slider, remove])
        remove.on_click(lambda _b: self._guard(self._remove_lora, row))
        self.lora_rows.children = (*self.lora_rows.children, row)

    def _remove_lora(self, row: Any) -> None:
        self.lora_rows.children = tuple(r for r in self.lora_rows.children if r is not row)

    @property
    def loras(self) -> list[tuple[str, float]]:
        """The LoRA rows as ``(path, scale)``."""
        return [(row.children[0].value, row.children[1].value) for row in self.lora_rows.children]

    def values(self) -> dict[str, Any]:
        """The raw control values by schema field name (seed is None in random mode)."""
        out = {name: w.value for name, w in self.controls.items()}
        if self.seed_mode.value == "random":
            out["seed"] = None
        return out

    def params(self) -> dict[str, Any]:
        """The validated job parameters the next Run would send (without the images)."""
        return build_params(self.values(), loras=self.loras)

    def _seed_mode_changed(self) -> None:
        self.seed.disabled = self.seed_mode.value == "random"

    def reuse_seed(self, seed: int | None = None) -> int:
        """What "reuse this seed" does: fixed seed mode with ``seed`` (default: the seed the last
        run used, e.g. a random one). Returns the seed."""
        seed = self.last_seed if seed is None else seed
        if seed is None:
            raise ValueError("no seed to reuse yet: run once first (or type a seed)")
        self.seed.max = max(self.seed.max, seed)
        self.seed.value = seed
        self.seed_mode.value = "fixed"
        self.reuse_seed_button.layout.display = "none"
        return seed

    def _show_seed_used(self, seed: int | None) -> None:
        """Write the seed a run used back into the seed box; offer to reuse a random one."""
        self.last_seed = seed
        if seed is None:
            return
        self.seed.max = max(self.seed.max, seed)
        self.seed.value = seed                   # shown (greyed out) in random mode too
        random_mode = self._seed_was_random and self.seed_mode.value == "random"
        self.reuse_seed_button.description = f"reuse seed {seed}"
        self.reuse_seed_button.layout.display = "" if random_mode else "none"

    def _current_image_source(self) -> Any:
        data = _upload_bytes(self.image_upload.value)
        if data is not None:
            return data
        if self.image_path.value.strip():
            return self.image_path.value.strip()
        return self._image_obj

    def _current_mask_source(self) -> Any:
        data = _upload_bytes(self.mask_upload.value)
        if data is not None:
            return data
        if self.mask_path.value.strip():
            return self.mask_path.value.strip()
        if self.painter is not None:
            return self.painter
        return self._mask_obj

    def inputs(self) -> tuple[Image.Image, Image.Image]:
        """The image and mask the next Run would send (the mask fitted to the image)."""
        source = self._current_image_source()
        if source is None:
            raise ValueError("no image: pass image= to the panel, type a path or upload one")
        image = load_image(source)
        mask_source = self._current_mask_source()
        if mask_source is None:
            raise ValueError("no mask: pass mask=, type a path, upload one or click 'Paint mask'")
        if isinstance(mask_source, MaskPainter):
            mask_source = mask_source.mask
        mask = fit_mask(load_mask(mask_source), image)
        return image, mask

    def _inputs_changed(self) -> None:
        """Say what the inputs are now (or what is wrong with them): names and sizes in the
        fields and the info line, a small before / mask preview, and Run disabled (with the
        reason in the status line) while the mask is empty."""
        self._name_code_inputs()
        try:
            image, mask = self.inputs()
        except Exception as exc:
            self.inputs_info.value = f"<small>inputs: {html.escape(str(exc))}</small>"
            self.input_preview.layout.display = "none"
            self._block_run(None)
            return
        from ..masks import mask_coverage

        names = (describe_source(self._current_image_source()),
                 describe_source(self._current_mask_source()))
        self.inputs_info.value = (
            f"<small>image {image.width}x{image.height} ({html.escape(names[0])}) · mask covers "
            f"{mask_coverage(mask):.1%} ({html.escape(names[1])})</small>")
        self.input_preview.value = png_bytes(input_preview(image, mask, height=_PREVIEW_HEIGHT))
        self.input_preview.layout.display = ""
        self._block_run(mask_problem(mask))

    def _name_code_inputs(self) -> None:
        """Objects passed from code (PIL, arrays, a painter) are named in their empty fields."""
        for field, upload, obj, hint in ((self.image_path, self.image_upload, self._image_obj,
                                          _IMAGE_HINT),
                                         (self.mask_path, self.mask_upload,
                                          self.painter or self._mask_obj, _MASK_HINT)):
            if obj is not None and not field.value.strip() and not upload.value:
                field.placeholder = from_code_placeholder(obj)
                field.tooltip = "set from code; type a path or upload to replace it"
                field.add_class("fluxnb-from-code")
            else:
                field.placeholder, field.tooltip = hint, None
                field.remove_class("fluxnb-from-code")

    def _block_run(self, reason: str | None) -> None:
        """Disable Run with ``reason`` in the status line (None: enable it again)."""
        was, self.run_blocked = self.run_blocked, reason
        self.run_button.disabled = self.running or reason is not None
        self.run_button.tooltip = f"disabled: {reason}" if reason else ""
        if self.running:
            return
        if reason is not None:
            self._set_status(f"Run is disabled: {reason}")
        elif was is not None:
            self._set_status("ready")

    def open_painter(self) -> MaskPainter:
        """Open a :class:`MaskPainter` over the current image (starting from the current mask);
        from then on the panel sends the painted mask."""
        image_source = self._current_image_source()
        if image_source is None:
            raise ValueError("no image to paint on: pass image= or type a path first")
        start = None
        mask_source = self._current_mask_source()
        if mask_source is not None and not isinstance(mask_source, MaskPainter):
            start = mask_source
        self.painter = MaskPainter(image_source, start)
        self.painter.on_change(lambda _p: self._inputs_changed())
        self.mask_path.value = ""
        self.mask_upload.value = ()
        self.painter_box.children = (self.painter.widget,)
        self._inputs_changed()
        return self.painter

    # -- feedback ------------------------------------------------------------------------------

    def _set_status(self, text: str) -> None:
        self.status.value = f"<b>status:</b> {html.escape(text)}"

    def _show_error(self, exc: BaseException) -> None:
        self.last_error = exc
        self.error.value = (
            "<div class='fluxnb-error' style='color:#b00020;white-space:pre-wrap'><b>error</b> "
            f"{html.escape(_error_text(exc))}</div>")

    def _clear_error(self) -> None:
        self.last_error = None
        self.error.value = ""

    def _guard(self, fn: Any, *args: Any) -> Any:
        """Run a widget callback and show any exception in the panel (never swallowed)."""
        try:
            return fn(*args)
        except Exception as exc:
            self._show_error(exc)
            log.debug("panel callback failed: %r", exc)
            return None

    def _set_running(self, running: bool) -> None:
        self.run_button.disabled = running or self.run_blocked is not None
        self.cancel_button.disabled = not running

    def _mark_stale(self, why: str) -> None:
        """Keep an earlier result on screen, dimmed and labelled as not from the last run."""
        if not self.result_box.children:
            return
        self.result_stale = True
        self.stale_note.value = stale_note_html(why)
        self.result_image.add_class("fluxnb-stale")
        self.result_caption.add_class("fluxnb-stale")
        self.result_box.children = (self.stale_note, self.result_image, self.result_caption)

    def _show_result(self, png: bytes, caption: str) -> None:
        """The before / mask / after strip with its caption as HTML text under it."""
        self.result_stale = False
        self.result_image.remove_class("fluxnb-stale")
        self.result_caption.remove_class("fluxnb-stale")
        self.result_image.value = png
        self.result_caption.value = f"<div>{html.escape(caption)}</div>"
        self.result_box.children = (self.result_image, self.result_caption)

    def _on_update(self, status: Status) -> None:
        text, progress = describe_status(status)
        if isinstance(status, Queued):
            self.queue_position = status.position
            if self._record is not None:
                self._record.status = "queued"
        elif isinstance(status, InProgress):
            self.queue_position = None
            if self._record is not None:
                self._record.status = "running"
        if progress is not None:
            done, total = progress
            self.progress.max = total
            self.progress.value = done
        self._set_status(text)

    def _on_enqueue(self, job: Any) -> None:
        self.job = job
        if self._record is not None:
            self._record.request_id = job.request_id
            self._record.status = "queued"
        self._set_status(f"submitted: request {job.request_id}")

    def _render(self, image: Image.Image, mask: Image.Image, outputs: list[Image.Image],
                caption: str) -> bytes:
        h = min(self.tile_height, image.height)
        strip = before_mask_after(image, mask, outputs, height=h)   # the caption is HTML text
        return png_bytes(strip)

    # -- running -------------------------------------------------------------------------------

    def _on_run_click(self, _button: Any = None) -> None:
        try:
            self.start()
        except Exception as exc:  # shown in the panel; a callback must not raise (it'd be swallowed)
            self._show_error(exc)

    def _on_cancel_click(self, _button: Any = None) -> None:
        self._guard(self.cancel)

    def start(self) -> TaskLike:
        """What Run does: validate, then schedule the job; returns the task (``panel.task``).

        Validation problems raise (and show in the panel) before anything is sent.
        """
        if self.running:
            raise RuntimeError("a job is already running: wait for it or click Cancel")
        self._clear_error()
        try:
            values = self.values()
            self._seed_was_random = values["seed"] is None
            if values["seed"] is None:
                values["seed"] = random.randint(0, _RANDOM_SEED_MAX)
            params = build_params(values, loras=self.loras)
            image, mask = self.inputs()
            problem = mask_problem(mask)
            if problem is not None:
                raise ValidationError([{"loc": ["body", "mask_url"], "type": "value_error",
                                        "msg": problem}])
        except Exception:
            self._set_status("not sent: fix the error below")
            self.progress.value, self.progress.bar_style = 0, ""
            self._mark_stale("the last Run was not sent (see the error)")
            raise
        self._record = record = self._history.start(params)
        self.job = None
        self.cancel_outcome = None
        self.queue_position = None
        self.progress.value = 0
        self.progress.bar_style = ""
        self._set_status("submitting")
        self._set_running(True)
        coro = self._job(params, image, mask, record)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        task: TaskLike
        if loop is not None:
            task = loop.create_task(coro)
        else:
            task = self._background_loop().submit(coro)
        self.task = task
        task.add_done_callback(self._task_done)
        return task

    async def arun(self) -> InpaintResult | None:
        """Run one job (like clicking Run) and wait for it; returns the result, or None when it
        was cancelled. Errors are shown in the panel and raised."""
        try:
            task = self.start()
        except Exception as exc:
            self._show_error(exc)
            raise
        try:
            if isinstance(task, asyncio.Task):
                done: InpaintResult = await task
                return done
            result: InpaintResult = await asyncio.wrap_future(task)
            return result
        except asyncio.CancelledError:
            if task.cancelled():
                return None
            raise

    def run(self, timeout: float | None = None) -> InpaintResult | None:
        """Blocking :meth:`arun` for scripts. In a notebook use ``await panel.arun()`` (or Run)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("an event loop is running here (a notebook?): use "
                               "`await panel.arun()` or click Run")
        try:
            task = self.start()
        except Exception as exc:
            self._show_error(exc)
            raise
        if not isinstance(task, concurrent.futures.Future):  # pragma: no cover - no loop was running
            raise RuntimeError("expected a background-loop future")
        try:
            # Ctrl-C cancels the job (on the server too), waits for that, and re-raises
            result: InpaintResult = wait_future(task, timeout)
            return result
        except concurrent.futures.CancelledError:
            return None

    def cancel(self) -> bool:
        """What Cancel does: cancel the running task; the job is cancelled on the server too.
        Returns False when nothing is running."""
        task = self.task
        if task is None or task.done():
            self._set_status("nothing to cancel")
            return False
        self._set_status("cancelling")
        self.cancel_button.disabled = True
        task.cancel()
        return True

    def _background_loop(self) -> BackgroundLoop:
        """A loop in a daemon thread for use without a running loop (scripts)."""
        if self._background is None:
            self._background = BackgroundLoop(name="fluxnb-panel-loop")
        return self._background

    async def _get_client(self) -> Any:
        if self._client is None:
            from ..backends import connect

            self._client = await asyncio.to_thread(connect, asynchronous=True)
            self._own_client = True
        return self._client

    async def _cancel_on_server(self, client: Any) -> None:
        job = self.job
        if job is None:
            self.cancel_outcome = "NOT_SUBMITTED"
            return
        try:
            if inspect.iscoroutinefunction(client.cancel):
                outcome = await client.cancel(job)
            else:
                outcome = await asyncio.to_thread(client.cancel, job)
        except Exception as exc:
            self._show_error(exc)
            self.cancel_outcome = "ERROR"
            return
        self.cancel_outcome = str(outcome)

    async def _job(self, params: dict[str, Any], image: Image.Image, mask: Image.Image,
                   record: RunRecord) -> InpaintResult:
        client = None
        try:
            client = await self._get_client()
            payload = {**params, "image_url": image, "mask_url": mask}
            if inspect.iscoroutinefunction(client.run):
                result: InpaintResult = await client.run(payload, on_update=self._on_update,
                                                         on_enqueue=self._on_enqueue)
                outputs = await result.apil_images()
            else:  # a sync QueueClient: wait in a worker thread
                result = await asyncio.to_thread(client.run, payload, on_update=self._on_update,
                                                 on_enqueue=self._on_enqueue)
                outputs = await asyncio.to_thread(result.pil_images)
            result.with_inputs(image, mask, params)
            from ..display import param_title

            caption = param_title(params, seed=result.seed)
            png = await asyncio.to_thread(self._render, image, mask, outputs, caption)
            self._show_result(png, caption)
            self._show_seed_used(result.seed)
            self.result = result
            self._history.finish(record, "completed", seed=result.seed, request_id=result.request_id)
            total = progress_from_logs(result.logs or [])
            if total is not None:
                self.progress.max, self.progress.value = total[1], total[1]
            else:
                self.progress.value = self.progress.max
            self.progress.bar_style = "success"
            drawn = " (random)" if self._seed_was_random else ""
            self._set_status(f"done in {record.seconds or 0:.1f} s · seed {result.seed}{drawn} · "
                             f"request {result.request_id}")
            return result
        except asyncio.CancelledError as exc:
            already = getattr(exc, "cancel_outcome", None)  # the async client cancelled it already
            if already is not None:
                self.cancel_outcome = str(already)
            elif client is not None:
                await self._cancel_on_server(client)
            self._history.finish(record, "cancelled", error=None)
            self.progress.value = 0                  # not frozen at the step it was cancelled at
            self.progress.bar_style = ""
            self._mark_stale("the last run was cancelled")
            self._set_status(f"cancelled (server: {self.cancel_outcome})")
            raise
        except Exception as exc:
            self._history.finish(record, "failed", error=_error_text(exc))
            self._show_error(exc)
            self.progress.bar_style = "danger"
            self._mark_stale("the last run failed (see the error above)")
            self._set_status("failed: see the error below")
            raise
        finally:
            self._set_running(False)
            self.history_html.value = self._history.to_html()

    def _task_done(self, task: TaskLike) -> None:
        """Retrieve the task's outcome (so no 'exception was never retrieved') and make sure
        any error is on screen."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self.last_error is not exc:
            self._show_error(exc)

    def close(self) -> None:
        """Close the widgets and the background loop (if one was started)."""
        if self.running and self.task is not None:
            self.task.cancel()
        self.widget.close()
        client, self._client = (self._client if self._own_client else None), None
        background, self._background = self._background, None
        if background is not None:
            background.close()  # waits for a cancelled job's cleanup; closes that loop's pool
        if client is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                run_blocking(client.aclose())
            else:
                self._closing = loop.create_task(_close_after(self.task, client))

