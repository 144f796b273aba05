"""``InpaintPanel``: an ipywidgets panel that runs inpainting jobs and shows what happens.

Sliders (bounds, steps, defaults) come from :data:`fluxnb.schema.INPUT_FIELDS`. **Run** schedules
the job as an asyncio task on the kernel's running loop (so the kernel stays responsive and
**Cancel** works on ipykernel 6 and 7); without a running loop (a script) the job runs on a
background loop thread. Every error (validation, HTTP, job failure) is shown inside the panel:
ipywidgets would otherwise swallow exceptions raised in button callbacks.

The widgets and their layout are :class:`~fluxnb.widgets.panel_widgets.PanelWidgets`; Run /
Cancel (the task, the loop, the client) is :class:`~fluxnb.widgets.panel_job.PanelJob`, which
reports to the panel through a :class:`~fluxnb.widgets.panel_job.JobListener`.

>>> panel = fluxnb.InpaintPanel(image=image, mask=mask)     # doctest: +SKIP
>>> panel                                                 # shows the panel   # doctest: +SKIP
>>> result = await panel.arun()                           # or click Run      # doctest: +SKIP
>>> panel.history                                         # a DataFrame       # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import html
import logging
import random
from typing import Any

from PIL import Image

from ..errors import ValidationError
from ..images import load_image, load_mask
from ..masks import fit_mask, mask_coverage
from ..pictures import before_mask_after
from ..result import InpaintResult
from .painter import MaskPainter
from .panel_code import attach_code_view, check_name, panel_cli, panel_code
from .panel_job import PanelJob, TaskLike
from .panel_model import build_params, mask_problem
from .panel_params import attach_params_upload, load_into, note_saved, preload_history
from .panel_run import RunView
from .panel_view import describe_source, from_code_placeholder, input_preview, png_bytes
from .panel_widgets import IMAGE_HINT, MASK_HINT, RANDOM_SEED_MAX, PanelWidgets

__all__ = ["InpaintPanel"]

log = logging.getLogger("fluxnb.panel")

#: Height of the before / mask preview of the inputs shown before a run.
_PREVIEW_HEIGHT = 88
#: Longest side of the before / mask / after tiles shown in the panel.
_TILE_HEIGHT = 256


def _upload_bytes(value: Any) -> bytes | None:
    """The bytes of an ipywidgets 8 FileUpload value (a tuple of dicts), or None."""
    if not value:
        return None
    item = value[0]
    content = item["content"] if isinstance(item, dict) else getattr(item, "content", None)
    return None if content is None else bytes(content)


class InpaintPanel(PanelWidgets):
    """A notebook panel for ``fal-ai/flux-lora/inpainting``: inputs, parameters, Run / Cancel,
    live status and progress, the before / mask / after result and a history of runs.

    ``client``: an ``AsyncQueueClient`` (best), a ``QueueClient``, or None for
    ``fluxnb.connect(asynchronous=True)`` on first Run. ``image``/``mask``: anything
    :func:`fluxnb.load_image` takes (path, URL, PIL, array), and the mask may be a
    :class:`~fluxnb.MaskPainter`; both can also be typed as a path or uploaded in the panel.
    ``image_name``/``mask_name``: the variable names ``panel.code()`` uses for inputs that are
    no path (default ``image`` / ``mask``); the "code" toggle shows that code and the command.

    Controls are attributes (``panel.steps.value = 12``); ``panel.controls`` maps schema field
    names to them. ``panel.start()`` is what Run does (returns the task), ``await
    panel.arun()`` runs and returns the result, ``panel.run()`` does so in a script,
    ``panel.cancel()`` is Cancel. ``panel.result`` is the last result, ``panel.history`` a
    DataFrame of the last runs, earlier kernels' included: runs are kept in the local run journal
    (:func:`fluxnb.journal`) unless ``journal=False`` (here or on the client);
    ``panel.load_params(i)`` re-applies run ``i`` of the history.
    """

    def __init__(self, client: Any = None, image: Any = None, mask: Any = None, *,
                 prompt: str = "", seed: int | None = None, history_size: int = 20,
                 tile_height: int = _TILE_HEIGHT, image_name: str | None = None,
                 mask_name: str | None = None, journal: bool | None = None):
        self._jobs = PanelJob(client)
        #: The run journal: None follows the client (on unless it says journal=False).
        self.journal = journal
        #: Variable names :meth:`code` uses for an image / mask that is no path (issue 13).
        self.image_name, self.mask_name = check_name(image_name, "image_name"), check_name(
            mask_name, "mask_name")
        self._image_obj = image
        self._mask_obj = mask
        self.painter: MaskPainter | None = mask if isinstance(mask, MaskPainter) else None
        super().__init__(image, mask, self.painter, prompt=prompt, seed=seed,
                         history_size=history_size, tile_height=tile_height)
        self._wire()
        attach_params_upload(self)  # "Load parameters" from an output image (issue 12)
        attach_code_view(self)  # the "code" toggle: panel.code() / cli_command() (issue 13)
        self._seed_mode_changed()
        self._guard(self._inputs_changed)
        self._guard(preload_history, self)  # earlier runs, from the journal (issue 13)

    def _wire(self) -> None:
        self.run_button.on_click(self._on_run_click)
        self.cancel_button.on_click(self._on_cancel_click)
        self.add_lora_button.on_click(lambda _b: self._guard(self.add_lora))
        self.paint_button.on_click(lambda _b: self._guard(self.open_painter))
        self.reuse_seed_button.on_click(lambda _b: self._guard(self.reuse_seed))
        for control in (self.image_path, self.image_upload, self.mask_path, self.mask_upload):
            control.observe(lambda _c: self._guard(self._inputs_changed), names="value")
        self.seed_mode.observe(lambda _c: self._guard(self._seed_mode_changed), names="value")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        state = "running" if self.running else "idle"
        return f"InpaintPanel({state}, {len(self._history)} runs)"

    # -- state (the controller's) ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._jobs.running

    @property
    def task(self) -> TaskLike | None:
        """The task of the current (or last) run: what :meth:`start` returned."""
        return self._jobs.task

    @property
    def job(self) -> Any:
        """The job of the current (or last) run once it was submitted."""
        return self._jobs.job

    @property
    def result(self) -> InpaintResult | None:
        """The result of the last completed run."""
        return self._jobs.result

    @property
    def cancel_outcome(self) -> str | None:
        """The server's answer to the last cancel, or None."""
        return self._jobs.cancel_outcome

    @property
    def client(self) -> Any:
        """The client (None until the first run when none was given)."""
        return self._jobs.client

    @property
    def history(self) -> Any:
        """The last runs as a pandas DataFrame (parameters, request id, status, seconds, seed)."""
        return self._history.to_frame()

    # -- values ----------------------------------------------------------------------------------

    def add_lora(self, path: str = "", scale: float | None = None) -> None:
        """Add a LoRA row (weights path or URL, and a scale slider from the schema)."""
        row = self._lora_row(path, scale)
        row.children[2].on_click(lambda _b: self._guard(self._remove_lora, row))
        self.lora_rows.children = (*self.lora_rows.children, row)

    def values(self) -> dict[str, Any]:
        """The raw control values by schema field name (seed is None in random mode)."""
        out = {name: w.value for name, w in self.controls.items()}
        if self.seed_mode.value == "random":
            out["seed"] = None
        return out

    def params(self) -> dict[str, Any]:
        """The validated job parameters the next Run would send (without the images)."""
        return build_params(self.values(), loras=self.loras)

    def code(self) -> str:
        """The ``client.run(...)`` code that sends what Run would (no key; see panel_code)."""
        return panel_code(self)

    def cli_command(self) -> str:
        """The ``fluxnb run ...`` command for the current settings (no key)."""
        return panel_cli(self)

    def load_params(self, source: Any) -> dict[str, Any]:
        """Set the controls from the parameters saved in an output image (path, bytes or PIL
        image; what "Load parameters" does with an upload). Returns them."""
        return load_into(self, source)

    def save(self, directory: Any) -> list[Any]:
        """Save the last result (``result.save``: the parameters inside each image)."""
        if self.result is None:
            raise ValueError("no result to save yet: click Run first")
        return note_saved(self.result, self.result.save(directory))

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

    # -- inputs ----------------------------------------------------------------------------------

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
                                          IMAGE_HINT),
                                         (self.mask_path, self.mask_upload,
                                          self.painter or self._mask_obj, MASK_HINT)):
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
        mask_source = self._current_mask_source()
        start = mask_source if not isinstance(mask_source, MaskPainter) else None
        self.painter = MaskPainter(image_source, start)
        self.painter.on_change(lambda _p: self._inputs_changed())
        self.mask_path.value = ""
        self.mask_upload.value = ()
        self.painter_box.children = (self.painter.widget,)
        self._inputs_changed()
        return self.painter

    # -- feedback --------------------------------------------------------------------------------

    # -- feedback --------------------------------------------------------------------------------

    def _guard(self, fn: Any, *args: Any) -> Any:
        """Run a widget callback and show any exception in the panel (never swallowed)."""
        try:
            return fn(*args)
        except Exception as exc:
            self._show_error(exc)
            log.debug("panel callback failed: %r", exc)
            return None

    def _render(self, image: Image.Image, mask: Image.Image, outputs: list[Image.Image],
                caption: str) -> bytes:
        h = min(self.tile_height, image.height)
        strip = before_mask_after(image, mask, outputs, height=h)   # the caption is HTML text
        return png_bytes(strip)

    # -- running ---------------------------------------------------------------------------------

    def _on_run_click(self, _button: Any = None) -> None:
        try:
            self.start()
        except Exception as exc:  # shown in the panel; a callback must not raise (it'd be swallowed)
            self._show_error(exc)

    def _on_cancel_click(self, _button: Any = None) -> None:
        self._guard(self.cancel)

    def _prepare(self) -> tuple[dict[str, Any], Image.Image, Image.Image]:
        """The parameters (a random seed drawn) and the inputs of the next run, or the error
        (shown in the status line, the last result marked stale) before anything is sent."""
        try:
            values = self.values()
            self._seed_was_random = values["seed"] is None
            if values["seed"] is None:
                values["seed"] = random.randint(0, RANDOM_SEED_MAX)
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
        return params, image, mask

    def start(self) -> TaskLike:
        """What Run does: validate, then schedule the job; returns the task (``panel.task``).

        Validation problems raise (and show in the panel) before anything is sent.
        """
        if self.running:
            raise RuntimeError("a job is already running: wait for it or click Cancel")
        self._clear_error()
        params, image, mask = self._prepare()
        record = self._history.start(params)
        self.queue_position = None
        self.progress.value, self.progress.bar_style = 0, ""
        self._set_status("submitting")
        self._set_running(True)
        task = self._jobs.start(params, image, mask, RunView(self, record, params, image, mask, self._render))
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
        return await PanelJob.wait(task)

    def run(self, timeout: float | None = None) -> InpaintResult | None:
        """Blocking :meth:`arun` for scripts. In a notebook use ``await panel.arun()`` (or Run).
        Ctrl-C cancels the job (on the server too), waits for that, and re-raises."""
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
        return PanelJob.wait_blocking(task, timeout)

    def cancel(self) -> bool:
        """What Cancel does: cancel the running task; the job is cancelled on the server too.
        Returns False when nothing is running."""
        if not self.running:
            self._set_status("nothing to cancel")
            return False
        self._set_status("cancelling")
        self.cancel_button.disabled = True
        return self._jobs.cancel()

    def _task_done(self, task: TaskLike) -> None:
        """Retrieve the task's outcome (so no 'exception was never retrieved') and make sure
        any error is on screen."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self.last_error is not exc:
            self._show_error(exc)

    def close(self) -> None:
        """Close the widgets, the background loop (if one was started) and a client the panel
        made (after a cancelled job's cleanup)."""
        self._jobs.cancel()
        self.widget.close()
        self._jobs.close()
