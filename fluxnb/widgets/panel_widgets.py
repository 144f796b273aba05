"""The panel's widgets and layout (the view): every control, the feedback area and how they are
arranged, plus the small methods that write into them (status, error, result, stale note).

:class:`PanelWidgets` knows nothing about jobs: :class:`~fluxnb.widgets.InpaintPanel` extends it
with the behaviour (callbacks, inputs, Run / Cancel through
:class:`~fluxnb.widgets.panel_job.PanelJob`). Slider bounds, steps and defaults come from
:data:`fluxnb.schema.INPUT_FIELDS` through :func:`~fluxnb.widgets.panel_model.slider_spec`.
"""

from __future__ import annotations

import html
import os
from typing import Any

from ..errors import ValidationError
from ..schema import INPUT_FIELDS, SEED_MAX
from .history import RunHistory
from .painter import MaskPainter
from .panel_model import slider_spec
from .panel_view import PANEL_CSS, stale_note_html

__all__ = ["RANDOM_SEED_MAX", "PanelWidgets", "error_text"]

_STYLE = {"description_width": "90px"}
#: Rows that wrap instead of squeezing (a squeezed column clips its sliders' readouts).
_WRAP = {"flex_flow": "row wrap", "align_items": "flex-start"}
IMAGE_HINT = "path or URL (or upload)"
MASK_HINT = "path or URL (or upload, or paint)"
#: Random seeds the panel draws stay below this (any int is fine; short ones are easier to read).
RANDOM_SEED_MAX = min(SEED_MAX, 2**31 - 1)


def error_text(exc: BaseException) -> str:
    """What the panel shows for an error: the type and the message (names field, value, range)."""
    name = type(exc).__name__
    if isinstance(exc, ValidationError):
        return f"{name}: {exc}"
    return f"{name}: {exc}" if str(exc) else name


class PanelWidgets:
    """Every widget of the panel as an attribute, laid out in :attr:`widget`."""

    def __init__(self, image: Any, mask: Any, painter: MaskPainter | None, *, prompt: str,
                 seed: int | None, history_size: int, tile_height: int):
        import ipywidgets as W

        #: Longest side of the before / mask / after tiles of the result strip.
        self.tile_height = tile_height
        self._history = RunHistory(history_size)
        #: The error shown now (None when there is none).
        self.last_error: BaseException | None = None
        #: The queue position of the running job, while it is queued.
        self.queue_position: int | None = None
        #: The seed the last completed run used (a drawn one in random mode).
        self.last_seed: int | None = None
        self._seed_was_random = False
        #: Why Run is disabled (e.g. an empty mask), or None.
        self.run_blocked: str | None = None

        self._build_inputs(W, image, mask, prompt)
        self._build_parameters(W, seed)
        self._build_feedback(W)
        self.painter_box = W.VBox([painter.widget] if painter and painter.widget else [])
        self.widget = self._layout(W)

    def _build_inputs(self, W: Any, image: Any, mask: Any, prompt: str) -> None:
        self.prompt = W.Textarea(value=prompt, description="Prompt", style=_STYLE,
                                 placeholder="what to paint in the masked (white) area",
                                 layout=W.Layout(width="98%", height="52px"))
        self.image_path = W.Text(description="Image", style=_STYLE, continuous_update=False,
                                 placeholder=IMAGE_HINT, layout=W.Layout(width="330px"),
                                 value=os.fspath(image) if isinstance(image, (str, os.PathLike)) else "")
        self.image_upload = W.FileUpload(accept="image/*", multiple=False, description="Upload",
                                         layout=W.Layout(width="auto"))
        self.mask_path = W.Text(description="Mask", style=_STYLE, continuous_update=False,
                                placeholder=MASK_HINT, layout=W.Layout(width="330px"),
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

    def _build_parameters(self, W: Any, seed: int | None) -> None:
        """Sliders (bounds, steps and defaults from the schema), seed, format, safety, LoRAs."""
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
                                     max=RANDOM_SEED_MAX if seed is None else max(seed, RANDOM_SEED_MAX),
                                     description="Seed", style=_STYLE, layout=W.Layout(width="220px"))
        self.seed_mode = W.ToggleButtons(options=["fixed", "random"],
                                         value="fixed" if seed is not None else "random",
                                         style={"button_width": "72px"},
                                         layout=W.Layout(flex="0 0 auto", width="auto"))
        self.seed_mode.add_class("fluxnb-seed-mode")
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

    def _build_feedback(self, W: Any) -> None:
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
        self.history_html = W.HTML(value="")

    def _layout(self, W: Any) -> Any:
        sliders = W.VBox([self.steps, self.guidance, self.strength, self.num_images],
                         layout=W.Layout(flex="0 0 auto", margin="0 16px 0 0"))
        sliders.add_class("fluxnb-sliders")
        seed_row = W.HBox([self.seed, self.seed_mode], layout=W.Layout(flex_flow="row nowrap"))
        options = W.VBox([seed_row, self.reuse_seed_button, self.output_format, self.safety],
                         layout=W.Layout(flex="0 0 auto"))
        widget = W.VBox([
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
        widget.add_class("fluxnb-panel")
        return widget

    # -- LoRA rows ------------------------------------------------------------------------------

    def _lora_row(self, path: str, scale: float | None) -> Any:
        """A LoRA row: weights path or URL, a scale slider from the schema, a remove button."""
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
        return W.HBox([path_box, scale_slider, remove])

    def _remove_lora(self, row: Any) -> None:
        self.lora_rows.children = tuple(r for r in self.lora_rows.children if r is not row)

    @property
    def loras(self) -> list[tuple[str, float]]:
        """The LoRA rows as ``(path, scale)``."""
        return [(row.children[0].value, row.children[1].value) for row in self.lora_rows.children]

    # -- writing feedback -----------------------------------------------------------------------

    def _set_status(self, text: str) -> None:
        self.status.value = f"<b>status:</b> {html.escape(text)}"

    def _show_error(self, exc: BaseException) -> None:
        self.last_error = exc
        self.error.value = (
            "<div class='fluxnb-error' style='color:#b00020;white-space:pre-wrap'><b>error</b> "
            f"{html.escape(error_text(exc))}</div>")

    def _clear_error(self) -> None:
        self.last_error = None
        self.error.value = ""

    def _set_running(self, running: bool) -> None:
        self.run_button.disabled = running or self.run_blocked is not None
        self.cancel_button.disabled = not running

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
