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
import io
import logging
import random
import threading
from typing import Any

from PIL import Image

from ..errors import ValidationError
from ..figures import before_mask_after
from ..images import load_image, load_mask
from ..masks import fit_mask
from ..protocol import InProgress, Queued, Status, progress_from_logs
from ..result import InpaintResult
from ..schema import INPUT_FIELDS, SEED_MAX
from .history import RunHistory, RunRecord
from .painter import MaskPainter
from .panel_model import build_params, describe_status, slider_spec

__all__ = ["InpaintPanel"]

log = logging.getLogger("fluxnb.panel")

_STYLE = {"description_width": "90px"}
#: Longest side of the before / mask / after tiles shown in the panel.
_TILE_HEIGHT = 256
#: Random seeds the panel draws stay below this (any int is fine; short ones are easier to read).
_RANDOM_SEED_MAX = min(SEED_MAX, 2**31 - 1)

TaskLike = asyncio.Task[Any] | concurrent.futures.Future[Any]


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
        self._loop_thread: threading.Thread | None = None
        self._bg_loop: asyncio.AbstractEventLoop | None = None

        # -- inputs
        self.prompt = W.Textarea(value=prompt, description="Prompt", style=_STYLE,
                                 placeholder="what to paint in the masked (white) area",
                                 layout=W.Layout(width="98%", height="52px"))
        self.image_path = W.Text(description="Image", style=_STYLE, continuous_update=False,
                                 placeholder="path or URL (or upload)", layout=W.Layout(width="360px"))
        self.image_upload = W.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.mask_path = W.Text(description="Mask", style=_STYLE, continuous_update=False,
                                placeholder="path or URL (or upload, or paint)",
                                layout=W.Layout(width="360px"))
        self.mask_upload = W.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.paint_button = W.Button(description="Paint mask", icon="paint-brush",
                                     tooltip="paint the mask over the image")
        self.inputs_info = W.HTML()

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
                                         style={"button_width": "80px"})
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
        self.result_box = W.VBox([], layout=W.Layout(min_height="0px"))
        self.history_html = W.HTML(value="")
        self.painter_box = W.VBox([self.painter.widget] if self.painter and self.painter.widget else [])

        self.run_button.on_click(self._on_run_click)
        self.cancel_button.on_click(self._on_cancel_click)
        self.add_lora_button.on_click(lambda _b: self._guard(self.add_lora))
        self.paint_button.on_click(lambda _b: self._guard(self.open_painter))
        self.image_path.observe(lambda _c: self._guard(self._inputs_changed), names="value")
        self.image_upload.observe(lambda _c: self._guard(self._inputs_changed), names="value")
        self.mask_path.observe(lambda _c: self._guard(self._inputs_changed), names="value")
        self.mask_upload.observe(lambda _c: self._guard(self._inputs_changed), names="value")
        self.seed_mode.observe(lambda _c: self._guard(self._seed_mode_changed), names="value")
        self._seed_mode_changed()

        self.widget = W.VBox([
            W.HTML("<b>fluxnb</b> · FLUX + LoRA inpainting"),
            self.prompt,
            W.HBox([self.image_path, self.image_upload]),
            W.HBox([self.mask_path, self.mask_upload, self.paint_button]),
            self.inputs_info,
            W.HBox([W.VBox([self.steps, self.guidance, self.strength, self.num_images]),
                    W.VBox([W.HBox([self.seed, self.seed_mode]), self.output_format, self.safety])]),
            W.HBox([W.HTML("<b>LoRAs</b>"), self.add_lora_button]),
            self.lora_rows,
            W.HBox([self.run_button, self.cancel_button, self.progress]),
            self.status,
            self.error,
            self.result_box,
            self.history_html,
            self.painter_box,
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
        """Say what the inputs are now (or what is wrong with them)."""
        try:
            image, mask = self.inputs()
        except Exception as exc:
            self.inputs_info.value = f"<small>inputs: {html.escape(str(exc))}</small>"
            return
        from ..masks import mask_coverage

        self.inputs_info.value = (f"<small>image {image.width}x{image.height} · mask covers "
                                  f"{mask_coverage(mask):.1%}</small>")

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
        self.run_button.disabled = running
        self.cancel_button.disabled = not running

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
        strip = before_mask_after(image, mask, outputs, caption=caption, height=h)
        buf = io.BytesIO()
        strip.save(buf, format="PNG")
        return buf.getvalue()

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
            if values["seed"] is None:
                values["seed"] = random.randint(0, _RANDOM_SEED_MAX)
            params = build_params(values, loras=self.loras)
            image, mask = self.inputs()
        except Exception:
            self._set_status("not sent: fix the error below")
            raise
        self._record = record = self._history.start(params)
        self.job = None
        self.cancel_outcome = None
        self.queue_position = None
        self.progress.value = 0
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
            task = asyncio.run_coroutine_threadsafe(coro, self._background_loop())
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
            result: InpaintResult = task.result(timeout)
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

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        """A loop in a daemon thread for use without a running loop (scripts)."""
        if self._bg_loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="fluxnb-panel-loop", daemon=True)
            thread.start()
            self._bg_loop, self._loop_thread = loop, thread
        return self._bg_loop

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
            self.result_image.value = png
            self.result_box.children = (self.result_image,)
            self.result = result
            self._history.finish(record, "completed", seed=result.seed, request_id=result.request_id)
            total = progress_from_logs(result.logs or [])
            if total is not None:
                self.progress.max, self.progress.value = total[1], total[1]
            else:
                self.progress.value = self.progress.max
            self._set_status(f"done in {record.seconds or 0:.1f} s · seed {result.seed} · "
                             f"request {result.request_id}")
            return result
        except asyncio.CancelledError:
            if client is not None:
                await self._cancel_on_server(client)
            self._history.finish(record, "cancelled", error=None)
            self._set_status(f"cancelled (server: {self.cancel_outcome})")
            raise
        except Exception as exc:
            self._history.finish(record, "failed", error=_error_text(exc))
            self._show_error(exc)
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
        if self._bg_loop is not None:
            loop, self._bg_loop = self._bg_loop, None
            if client is not None:
                asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(10)
            loop.close()
        elif client is not None:
            try:
                asyncio.get_running_loop().create_task(client.aclose())
            except RuntimeError:
                asyncio.run(client.aclose())

