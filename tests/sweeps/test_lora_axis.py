"""LoRA baseline and "which LoRA?" sweeps (issue 13): ``lora_scale`` 0 sends the job without the
LoRA at all, labelled "no LoRA"; a ``loras`` axis over files (or none), labelled by file name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import fluxnb
from fluxnb.client import QueueClient
from fluxnb.server import BackgroundServer
from fluxnb.sweeps import build_plan
from fluxnb.sweeps.axes import lora_list
from tests.sweep_support import small_inputs
from tests.sweeps.test_prompt_sr import Recording

Factory = Any
BASE = {"prompt": "p", "image_url": "https://x/i.png", "mask_url": "https://x/m.png"}


def _labels(sheet: fluxnb.Sheet) -> set[str]:
    return {t for ax in sheet.figure.axes for t in (ax.get_title(), ax.get_ylabel()) if t}


def test_lora_scale_0_leaves_the_lora_out_of_the_request(server_factory: Factory,
                                                         tmp_path: Path) -> None:
    server: BackgroundServer = server_factory(engine="preview", workers=2)
    sent = Recording()
    base = {**small_inputs(), "loras": [{"path": "style.safetensors", "scale": 1.0}]}
    with QueueClient(server.base_url, transport=sent, max_retries=0) as client:
        s = fluxnb.sweep(client, base, tmp_path, lora_scale=[0, 0.5, 1.0], steps=[2], cache=False,
                         progress=None, verbose=False, seeds=1)
    assert s.complete
    by_scale = {b.get("loras", [{}])[0].get("scale") if b.get("loras") else None: b
                for b in sent.bodies}
    assert set(by_scale) == {None, 0.5, 1.0}          # scale 0: no loras in the body at all
    assert "loras" not in by_scale[None] or by_scale[None]["loras"] == []
    frame = s.frame.sort_values("cell")
    assert frame["lora_scale"].tolist() == [0, 0.5, 1.0]
    assert frame["loras"].tolist()[0] == "[]"
    labels = _labels(s.contact_sheet(x="lora_scale"))
    assert {"no LoRA", "lora_scale=0.5", "lora_scale=1"} <= labels


def test_a_loras_axis_compares_files_and_none(server_factory: Factory, tmp_path: Path) -> None:
    server: BackgroundServer = server_factory(engine="preview", workers=2)
    sent = Recording()
    loras = [None, "/l/a.safetensors", {"path": "/l/b.safetensors", "scale": 0.8}]
    with QueueClient(server.base_url, transport=sent, max_retries=0) as client:
        s = fluxnb.sweep(client, small_inputs(), tmp_path, loras=loras, strength=[0.5, 1.0],
                         cache=False, progress=None, verbose=False, seeds=1)
    assert s.complete and len(s.frame) == 6
    got = sorted(str(b.get("loras") or []) for b in sent.bodies)
    assert got == sorted(2 * ["[]", "[{'path': '/l/a.safetensors', 'scale': 1.0}]",
                              "[{'path': '/l/b.safetensors', 'scale': 0.8}]"])
    sheet = s.contact_sheet(x="loras", y="strength")
    assert {"no LoRA", "a.safetensors", "b.safetensors@0.8"} <= _labels(sheet)
    assert not any("not run" in t.get_text() for ax in sheet.figure.axes for t in ax.texts)
    # the frame column is the axis value, so the sheet finds every cell
    assert set(s.frame["loras"]) == set(s.axes["loras"])


def test_the_forms_of_a_loras_axis_value() -> None:
    plan = build_plan(BASE, {"loras": [[], "a.safetensors", [{"path": "b.safetensors", "scale": 0.8},
                                                            {"path": "c.safetensors"}]]}, seeds=1)
    assert [c.inputs.get("loras", []) for c in plan.cells] == [
        [], [{"path": "a.safetensors", "scale": 1.0}],
        [{"path": "b.safetensors", "scale": 0.8}, {"path": "c.safetensors", "scale": 1.0}]]
    assert lora_list({"path": "x.safetensors", "scale": 0}) == []     # scale 0 is no LoRA
    with pytest.raises(ValueError, match="a loras axis value is a LoRA path"):
        build_plan(BASE, {"loras": [3]})


def test_lora_scale_over_a_loras_axis() -> None:
    plan = build_plan(BASE, {"loras": ["a.safetensors", "b.safetensors"], "lora_scale": [0, 0.5]},
                      seeds=1)
    assert [c.inputs.get("loras", []) for c in plan.cells] == [
        [], [{"path": "a.safetensors", "scale": 0.5}], [], [{"path": "b.safetensors", "scale": 0.5}]]
    # the loras column keeps the axis value (so a sheet can find the cell), lora_scale says 0
    assert plan.cells[0].columns()["loras"] == plan.axes["loras"][0]
    with pytest.raises(ValueError, match="lora_scale axis needs"):
        build_plan(BASE, {"lora_scale": [0, 1]})
