"""Copy as code: the ``client.run(...)`` call and the ``fluxnb run ...`` command for the panel's
current settings, and the panel's "code" toggle that shows both, updated as the controls move.

Every parameter the panel would send is written out (what :meth:`InpaintPanel.params` returns),
so the code reproduces the request exactly; a random seed is left out, with a comment saying so
(and which seed the last run drew). Inputs keep their names:

* a path or URL (passed as ``image=``, or typed in the panel) stays that path or URL;
* anything else (a PIL image, an array, an upload, a painted mask) becomes a variable, ``image``
  / ``mask`` or the name given as ``InpaintPanel(..., image_name="photo", mask_name="m")``, with
  a comment saying where it came from. The panel cannot see a variable's name in your notebook,
  so it never guesses one.

No key is ever written: the code calls ``fluxnb.connect(...)`` (with the server's URL unless it
is fal.ai's default), which reads ``FLUXNB_KEY`` / ``FAL_KEY`` from the environment.

>>> from fluxnb.widgets.panel_code import InputRef, code_text
>>> print(code_text({"prompt": "a fox", "seed": 3}, InputRef("in.png"), InputRef("m.png"),
...                 base_url=None))
import fluxnb
<BLANKLINE>
client = fluxnb.connect()  # fal.ai with FAL_KEY; else FLUXNB_BASE_URL; else a local server
result = client.run(
    image_url='in.png',
    mask_url='m.png',
    prompt='a fox',
    seed=3,
)
"""

from __future__ import annotations

import html
import keyword
import os
import shlex
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..protocol import DEFAULT_BASE_URL
from .panel_view import from_code_placeholder

__all__ = ["CLI_FLAGS", "InputRef", "attach_code_view", "check_name", "cli_text", "code_text",
           "input_ref", "panel_cli", "panel_code"]

#: ``fluxnb run`` flags of the job fields (see ``fluxnb.cli._add_job_options``).
CLI_FLAGS: Mapping[str, str] = {
    "prompt": "--prompt", "num_inference_steps": "--steps", "guidance_scale": "--guidance",
    "strength": "--strength", "seed": "--seed", "num_images": "--num-images",
    "output_format": "--format",
}
_CONT = " \\\n    "


@dataclass(frozen=True)
class InputRef:
    """How the code names an input: ``path`` (a path or URL) or, when None, the variable ``name``
    with a ``note`` saying where the input came from."""

    path: str | None
    name: str = "image"
    note: str = ""

    @property
    def expr(self) -> str:
        """The Python expression: the quoted path, or the variable name."""
        return repr(self.path) if self.path is not None else self.name


def check_name(value: str | None, what: str) -> str | None:
    """``value`` if it is a usable Python variable name (or None); else a ValueError."""
    if value is not None and (not isinstance(value, str) or not value.isidentifier()
                              or keyword.iskeyword(value)):
        raise ValueError(f"{what}={value!r} must be a Python variable name (letters, digits, _), "
                         f"e.g. {what}='photo': the panel's code shows the input under this name")
    return value


def _upload_name(value: Any) -> str | None:
    if not value:
        return None
    item = value[0]
    name = item.get("name") if isinstance(item, dict) else getattr(item, "name", None)
    return str(name) if name else None


def input_ref(source: Any, *, default: str, name: str | None = None,
              upload_name: str | None = None) -> InputRef:
    """The :class:`InputRef` of one panel input (what ``_current_image_source()`` returns)."""
    var = name or default
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if not text.startswith("data:"):
            return InputRef(text, var)
        return InputRef(None, var, "a data URI typed in the panel")
    if source is None:
        return InputRef(None, var, f"not set yet: pass {default}= to the panel or type a path")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return InputRef(None, var, f"uploaded in the panel ({upload_name or 'a file'})")
    if type(source).__name__ == "MaskPainter":
        return InputRef(None, var, "painted in the panel: panel.painter.mask")
    what = (f"PIL image {source.width}x{source.height}" if isinstance(source, Image.Image)
            else from_code_placeholder(source).removeprefix("from code: "))
    filename = getattr(source, "filename", "")
    opened = f", opened from {filename!r}" if isinstance(filename, str) and filename else ""
    given = f" as {name}" if name else ""
    return InputRef(None, var, f"the {what} passed to the panel{given}{opened}")


def _safe_url(base_url: str) -> str:
    """``base_url`` without any user:password part (never a secret in the code)."""
    parts = urllib.parse.urlsplit(base_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")


def _is_default(base_url: str | None) -> bool:
    return base_url is None or base_url.rstrip("/") == DEFAULT_BASE_URL


def code_text(params: Mapping[str, Any], image: InputRef, mask: InputRef, *,
              base_url: str | None, seed_note: str | None = None) -> str:
    """The Python code that sends ``params`` with these inputs (``base_url`` None or fal's
    default: ``fluxnb.connect()``; else that server)."""
    lines = ["import fluxnb", ""]
    lines += [f"# {ref.name}: {ref.note}" for ref in (image, mask) if ref.path is None]
    if _is_default(base_url):
        lines.append("client = fluxnb.connect()  # fal.ai with FAL_KEY; else FLUXNB_BASE_URL; "
                     "else a local server")
    else:
        lines.append(f"client = fluxnb.connect({_safe_url(str(base_url))!r})  # a key it "
                     "needs comes from FLUXNB_KEY")
    lines += ["result = client.run(", f"    image_url={image.expr},", f"    mask_url={mask.expr},"]
    lines += [f"    {name}={value!r}," for name, value in params.items()]
    if seed_note:
        lines.append(f"    # {seed_note}")
    lines.append(")")
    return "\n".join(lines)


def _cli_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def cli_text(params: Mapping[str, Any], image: InputRef, mask: InputRef, *,
             base_url: str | None, seed_note: str | None = None) -> str:
    """The ``fluxnb run`` command line for ``params`` (multi-line with ``\\`` continuations)."""
    notes = [f"# {ref.name}: {ref.note}; save it as {ref.name}.png first"
             for ref in (image, mask) if ref.path is None]
    if seed_note:
        notes.append(f"# {seed_note} (add --seed N to repeat one)")
    words = [["fluxnb", "run"],
             ["--image", image.path if image.path is not None else f"{image.name}.png",
              "--mask", mask.path if mask.path is not None else f"{mask.name}.png"]]
    flags: list[str] = []
    for name, value in params.items():
        if name in CLI_FLAGS:
            flags += [CLI_FLAGS[name], _cli_value(value)]
        elif name == "enable_safety_checker":
            flags.append("--safety-checker" if value else "--no-safety-checker")
    words += [flags[i:i + 8] for i in range(0, len(flags), 8)]  # four flags a line
    words += [["--lora", f"{item['path']}@{item['scale']}"] for item in params.get("loras", ())]
    if not _is_default(base_url):
        words.append(["--base-url", _safe_url(str(base_url))])
    command = _CONT.join(" ".join(shlex.quote(w) for w in group) for group in words if group)
    return "\n".join([*notes, command])


# -- the panel's side ------------------------------------------------------------------------------


def _refs(panel: Any) -> tuple[InputRef, InputRef]:
    image = input_ref(panel._current_image_source(), default="image",
                      name=getattr(panel, "image_name", None),
                      upload_name=_upload_name(panel.image_upload.value))
    mask = input_ref(panel._current_mask_source(), default="mask",
                     name=getattr(panel, "mask_name", None),
                     upload_name=_upload_name(panel.mask_upload.value))
    return image, mask


def _settings(panel: Any) -> tuple[dict[str, Any], InputRef, InputRef, str | None, str | None]:
    params = panel.params()  # raises ValidationError for settings the panel could not send
    note = None
    if panel.seed_mode.value == "random":
        last = f"; the last run drew seed={panel.last_seed}" if panel.last_seed is not None else ""
        note = f"seed: random, a new one each Run{last}"
    client = panel.client
    base_url = None if client is None else getattr(client, "base_url", None)
    return (params, *_refs(panel), base_url, note)


def panel_code(panel: Any) -> str:
    """``panel.code()``: the ``client.run(...)`` code for the panel's current settings."""
    params, image, mask, base_url, note = _settings(panel)
    return code_text(params, image, mask, base_url=base_url, seed_note=note)


def panel_cli(panel: Any) -> str:
    """``panel.cli_command()``: the ``fluxnb run ...`` command for the current settings."""
    params, image, mask, base_url, note = _settings(panel)
    return cli_text(params, image, mask, base_url=base_url, seed_note=note)


def _pre(text: str, css_class: str) -> str:
    return (f"<pre class='{css_class}' style='user-select:text;white-space:pre-wrap;margin:2px 0;"
            f"padding:6px;background:#f6f8fa;border:1px solid #ddd'>{html.escape(text)}</pre>")


def _refresh(panel: Any) -> None:
    if not panel.code_toggle.value:
        return
    try:
        python, shell = panel.code(), panel.cli_command()
    except Exception as exc:  # e.g. an empty prompt: say what to fix instead of stale code
        panel.code_view.value = _pre(f"# not runnable yet: {exc}", "fluxnb-code-error")
        return
    panel.code_view.value = (_pre(python, "fluxnb-code-python") + "<small>or in a shell:</small>"
                             + _pre(shell, "fluxnb-code-shell"))


def _watch_loras(panel: Any, update: Any) -> None:
    for row in panel.lora_rows.children:
        if row.model_id not in panel._code_watched:
            panel._code_watched.add(row.model_id)
            for child in row.children[:2]:   # the path and the scale slider
                child.observe(update, names="value")
    update()


def attach_code_view(panel: Any) -> None:
    """Add the "code" toggle and its read-only view (above the Run row) and keep the view in
    step with every control, the inputs and the LoRA rows."""
    import ipywidgets as W

    panel.code_toggle = W.ToggleButton(value=False, description="code", icon="code",
                                       tooltip="show the client.run(...) call and the fluxnb run "
                                               "command for these settings",
                                       layout=W.Layout(width="auto"))
    panel.code_toggle.add_class("fluxnb-code-toggle")
    panel.code_view = W.HTML(value="", layout=W.Layout(display="none", width="98%"))
    panel.code_view.add_class("fluxnb-code")
    panel._code_watched = set()

    def update(_change: Any = None) -> None:
        panel._guard(_refresh, panel)

    def toggled(change: Any) -> None:
        panel.code_view.layout.display = "" if change["new"] else "none"
        update()

    panel.code_toggle.observe(toggled, names="value")
    for control in (*panel.controls.values(), panel.seed_mode, panel.image_path, panel.image_upload,
                    panel.mask_path, panel.mask_upload):
        control.observe(update, names="value")
    panel.painter_box.observe(update, names="children")
    panel.lora_rows.observe(lambda _c: _watch_loras(panel, update), names="children")
    children = list(panel.widget.children)
    run_row = next((c for c in children if panel.run_button in getattr(c, "children", ())), None)
    at = children.index(run_row) if run_row is not None else len(children)
    panel.widget.children = (*children[:at], panel.code_toggle, panel.code_view, *children[at:])
