"""Parameters in and out of the panel's images: "load parameters from an image" (an upload whose
saved parameters set the controls, through the one schema) and what the panel's saves write.

>>> panel = fluxnb.InpaintPanel(image=image, mask=mask)            # doctest: +SKIP
>>> panel.load_params("out/job_0.png")                            # doctest: +SKIP
>>> panel.save("out/")      # the last result, parameters inside   # doctest: +SKIP
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from ..client.journal import note_outputs, read_rows
from ..params_meta import read_params

__all__ = ["PARAMS_HINT", "apply_params", "attach_params_upload", "load_into", "note_saved",
           "preload_history", "upload_content"]

PARAMS_HINT = "load parameters from an output image fluxnb saved (PNG or JPEG)"


def upload_content(value: Any) -> bytes | None:
    """The bytes of an ipywidgets 8 FileUpload value (a tuple of dicts), or None."""
    if not value:
        return None
    item = value[0]
    content = item["content"] if isinstance(item, dict) else getattr(item, "content", None)
    return None if content is None else bytes(content)


def apply_params(panel: Any, params: Mapping[str, Any]) -> list[str]:
    """Set the panel's controls from ``params`` (what :func:`fluxnb.read_params` returns): the
    sliders, prompt, format and safety checker, a fixed seed, the LoRA rows. Returns the names
    it set; fields the panel has no control for (``image_size``, ``sync_mode``) are skipped."""
    done = []
    for name, control in panel.controls.items():
        if name not in params or name == "seed":
            continue
        control.value = params[name]
        done.append(name)
    seed = params.get("seed")
    if isinstance(seed, int):
        panel.seed.max = max(panel.seed.max, seed)
        panel.seed.value = seed
        panel.seed_mode.value = "fixed"
        done.append("seed")
    if "loras" in params:
        panel.lora_rows.children = ()
        for item in params["loras"] or []:
            panel.add_lora(str(item.get("path", "")), item.get("scale"))
        done.append("loras")
    return done


def _load_uploaded(panel: Any) -> None:
    data = upload_content(panel.params_upload.value)
    if data is None:
        return
    name = panel.params_upload.value[0]
    name = name.get("name") if isinstance(name, dict) else getattr(name, "name", None)
    panel.load_params(data)
    panel.params_info.value = (f"<span class='fluxnb-params-info'>parameters loaded from "
                               f"{html.escape(str(name or 'the image'))}</span>")


def attach_params_upload(panel: Any) -> None:
    """Add the "Load parameters" upload under the LoRA rows and wire it to ``panel.load_params``
    (errors, e.g. an image without parameters, show in the panel)."""
    import ipywidgets as W

    panel.params_upload = W.FileUpload(accept=".png,.jpg,.jpeg,image/png,image/jpeg",
                                       multiple=False, description="Load parameters",
                                       tooltip=PARAMS_HINT, layout=W.Layout(width="auto"))
    panel.params_upload.add_class("fluxnb-params-upload")
    panel.params_info = W.HTML(value="")
    row = W.HBox([panel.params_upload, panel.params_info])
    children = list(panel.widget.children)
    at = children.index(panel.lora_rows) + 1 if panel.lora_rows in children else len(children)
    panel.widget.children = (*children[:at], row, *children[at:])
    panel.params_upload.observe(lambda _c: panel._guard(_load_uploaded, panel), names="value")


def load_into(panel: Any, source: Any) -> dict[str, Any]:
    """``read_params(source)`` applied to the panel; returns the parameters. An int is a run of
    ``panel.history`` (as ``iloc``: -1 the last, yesterday's included): its parameters, seed,
    and the image and mask paths it ran with when known."""
    if isinstance(source, int) and not isinstance(source, bool):
        return _load_run(panel, source)
    params = read_params(source)
    apply_params(panel, params)
    return params


def _load_run(panel: Any, i: int) -> dict[str, Any]:
    records = panel._history.records
    if not -len(records) <= i < len(records):
        raise IndexError(f"load_params({i}): the history has {len(records)} runs "
                         f"(use 0..{len(records) - 1} or negative positions)")
    record = records[i]
    params = dict(record.params)
    if record.seed is not None:
        params["seed"] = record.seed
    apply_params(panel, params)
    for box, where in ((panel.image_path, record.image), (panel.mask_path, record.mask)):
        if where:
            box.value = str(where)
    return params


def preload_history(panel: Any) -> None:
    """Fill a new panel's history with the panel runs of the run journal (earlier kernels'
    too), unless the panel or its client has ``journal=False``."""
    if panel.journal is False or (panel.journal is None and
                                  getattr(panel.client, "journal", None) is False):
        return
    if panel._history.preload(read_rows(origin="panel", limit=panel._history.maxlen)):
        panel.history_html.value = panel._history.to_html()


def note_saved(result: Any, paths: list[Any]) -> list[Any]:
    """Add saved files to the result's journal row; returns ``paths``."""
    note_outputs(getattr(result, "request_id", None), paths)
    return paths
