"""The panel's history outlives the kernel (issue 13, item 7): a panel made after another one ran
(a restarted kernel: a new panel, nothing in memory) shows the earlier runs from the run journal,
and ``load_params(i)`` re-applies one; ``journal=False`` records and shows nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fluxnb.client import AsyncQueueClient, QueueClient
from fluxnb.client.journal import read_rows
from fluxnb.server import BackgroundServer
from fluxnb.widgets import InpaintPanel
from tests.conftest import make_test_image, make_test_mask


def _paths(folder: Path) -> tuple[Path, Path]:
    image, mask = folder / "photo.png", folder / "mask.png"
    make_test_image(80, 48).save(image)
    make_test_mask(80, 48).save(mask)
    return image, mask


def _run_panel(base_url: str, folder: Path, **panel_kw: Any) -> InpaintPanel:
    image, mask = _paths(folder)

    async def main() -> InpaintPanel:
        async with AsyncQueueClient(base_url, poll_interval=0.05) as client:
            panel = InpaintPanel(client, prompt="a fox in the moss", seed=77, **panel_kw)
            panel.image_path.value, panel.mask_path.value = str(image), str(mask)
            panel.steps.value = 9
            assert await panel.arun() is not None
            return panel

    return asyncio.run(main())


def test_a_new_panel_shows_the_runs_of_an_earlier_one(live_server: BackgroundServer,
                                                      tmp_path: Path) -> None:
    first = _run_panel(live_server.base_url, tmp_path)
    request_id = first.job.request_id
    first.close()
    row = read_rows()[-1]
    assert (row["origin"], row["request_id"], row["seed"]) == ("panel", request_id, 77)
    assert row["image"] == str((tmp_path / "photo.png").resolve())

    # "restarted kernel": a new panel, no in-memory history, nothing shared with the first one
    with QueueClient(live_server.base_url, poll_interval=0.05) as client:
        later = InpaintPanel(client, prompt="")
        assert len(later._history) == 1
        shown = later.history.iloc[-1]
        assert (shown["status"], shown["request_id"], shown["steps"], shown["seed"]) == (
            "completed", request_id, 9, 77)
        assert request_id[:8] in later.history_html.value
        # "load" re-applies the run's settings, its inputs' paths included
        params = later.load_params(-1)
        assert params["num_inference_steps"] == 9
        assert (later.steps.value, later.seed.value, later.seed_mode.value) == (9, 77, "fixed")
        assert later.prompt.value == "a fox in the moss"
        assert later.image_path.value == str((tmp_path / "photo.png").resolve())
        assert later.params() == first.params()
        result = later.run(timeout=60)
        assert result is not None
        sent = live_server.service.get(result.request_id).params
        assert sent["num_inference_steps"] == 9 and sent["seed"] == 77
        later.close()
    assert len(read_rows(origin="panel")) == 2


def test_journal_false_records_and_shows_nothing(live_server: BackgroundServer,
                                                 tmp_path: Path) -> None:
    first = _run_panel(live_server.base_url, tmp_path, journal=False)
    first.close()
    assert read_rows() == []
    _run_panel(live_server.base_url, tmp_path).close()     # recorded
    assert len(read_rows()) == 1
    private = InpaintPanel(None, journal=False)
    assert len(private._history) == 0
    private.close()
    with QueueClient(live_server.base_url, journal=False) as client:
        assert len(InpaintPanel(client)._history) == 0
