"""Prompt search-and-replace axis (issue 13, as AUTOMATIC1111's Prompt S/R): the first value is
searched in the prompt and each value replaces it; a missing word is refused before any job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import fluxnb
from fluxnb.client import QueueClient
from fluxnb.server import BackgroundServer
from fluxnb.sweeps import build_plan
from tests.sweep_support import FaultTransport, small_inputs

Factory = Any


class Recording(FaultTransport):
    """Forwards everything (no faults) and keeps the JSON body of every submit."""

    def __init__(self) -> None:
        super().__init__(rate=0.0)
        self.bodies: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.content:
            self.bodies.append(json.loads(request.content))
        return await super().handle_async_request(request)


def _base(prompt: str = "a lion on a rock, a lion in the sun") -> dict[str, Any]:
    return {**small_inputs(), "prompt": prompt}


def test_each_value_replaces_the_first_in_the_prompt_sent(server_factory: Factory,
                                                          tmp_path: Path) -> None:
    server: BackgroundServer = server_factory(engine="preview", workers=2)
    sent = Recording()
    with QueueClient(server.base_url, transport=sent, max_retries=0) as client:
        s = fluxnb.sweep(client, _base(), tmp_path, prompt_sr=["lion", "tiger", "fox"], steps=[2],
                         cache=False, progress=None, verbose=False, seeds=1)
    assert s.complete
    frame = s.frame.sort_values("cell")
    assert frame["prompt_sr"].tolist() == ["lion", "tiger", "fox"]
    assert frame["prompt"].tolist() == ["a lion on a rock, a lion in the sun",   # kept as is
                                        "a tiger on a rock, a tiger in the sun",  # every one
                                        "a fox on a rock, a fox in the sun"]
    assert sorted(b["prompt"] for b in sent.bodies) == sorted(frame["prompt"])
    assert all("prompt_sr" not in b for b in sent.bodies)    # not a field of the request
    sheet = s.contact_sheet(x="prompt_sr")
    titles = [ax.get_title() for ax in sheet.figure.axes]
    assert {"prompt_sr=lion", "prompt_sr=tiger", "prompt_sr=fox"} <= set(titles)
    assert fluxnb.Sweep.load(tmp_path).axes["prompt_sr"] == ["lion", "tiger", "fox"]


def test_a_missing_word_is_refused_before_any_job(server_factory: Factory, tmp_path: Path) -> None:
    server: BackgroundServer = server_factory(engine="preview", workers=1)
    sent = Recording()
    with QueueClient(server.base_url, transport=sent, max_retries=0) as client:
        with pytest.raises(ValueError) as err:
            fluxnb.sweep(client, _base("a cat on a mat"), tmp_path, prompt_sr=["lion", "tiger"],
                         cache=False, progress=None, verbose=False)
    assert "'lion' is not in the prompt 'a cat on a mat'" in str(err.value)
    assert sent.bodies == [] and server.service.stats["requests"]["submit"] == 0


def test_the_text_form_and_a_prompt_axis() -> None:
    base = {"prompt": "p", "image_url": "https://x/i.png", "mask_url": "https://x/m.png"}
    plan = build_plan(base, {"prompt": ["a red lion", "a lion, asleep"], "prompt_sr": "lion, cat"},
                      seeds=1)
    assert [c.inputs["prompt"] for c in plan.cells] == ["a red lion", "a red cat", "a lion, asleep",
                                                        "a cat, asleep"]
    assert plan.axes["prompt_sr"] == ["lion", "cat"]
    with pytest.raises(ValueError, match="'lion' is not in the prompt 'a red fox'"):
        build_plan(base, {"prompt": ["a red lion", "a red fox"], "prompt_sr": ["lion", "cat"]})
    with pytest.raises(ValueError, match="prompt_sr is an axis only"):
        build_plan({**base, "prompt_sr": ["p"]}, {})
    with pytest.raises(ValueError, match="must be a list of texts"):
        build_plan(base, {"prompt_sr": [1, 2]})
