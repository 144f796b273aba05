"""What one run shows in the panel: the :class:`~fluxnb.widgets.panel_job.JobListener` that
writes a job's status, progress, result strip, history row and seed into the panel's widgets."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

from PIL import Image

from ..client.journal import recording
from ..pictures import param_title
from ..protocol import InProgress, Queued, Status, progress_from_logs
from ..result import InpaintResult
from .history import RunRecord
from .panel_job import JobListener
from .panel_model import describe_status
from .panel_widgets import PanelWidgets, error_text

__all__ = ["RunView"]

#: Draws the before / mask / after strip: (image, mask, outputs, caption) -> PNG bytes.
Render = Callable[[Image.Image, Image.Image, list[Image.Image], str], bytes]


def _path_or_none(source: Any) -> Any:
    """A typed or given path (str/PathLike, not bytes, PIL or a painter), else None."""
    return source if isinstance(source, (str, os.PathLike)) else None


class RunView(JobListener):
    """One run of ``panel``: ``record`` is its history row, ``params`` what was sent with
    ``image`` and ``mask``; ``render`` draws the result strip (in a worker thread)."""

    def __init__(self, panel: PanelWidgets, record: RunRecord, params: dict[str, Any],
                 image: Image.Image, mask: Image.Image, render: Render):
        self.panel, self.record, self.params = panel, record, params
        self.image, self.mask, self.render = image, mask, render

    def recording(self, client: Any) -> contextlib.AbstractContextManager[object]:
        """Record the run in the journal (origin ``panel``, the inputs by the path they came
        from) unless the panel or its client says ``journal=False``."""
        setting = getattr(self.panel, "journal", None)
        if setting is None:
            setting = getattr(client, "journal", None) is not False
        image, mask = (_path_or_none(getattr(self.panel, name, lambda: None)()) for name in (
            "_current_image_source", "_current_mask_source"))
        self.record.image, self.record.mask = (None if x is None else str(x) for x in (image, mask))
        return recording(enabled=bool(setting), origin="panel", image=image, mask=mask)

    def on_update(self, status: Status) -> None:
        panel = self.panel
        text, progress = describe_status(status)
        if isinstance(status, Queued):
            panel.queue_position = status.position
            self.record.status = "queued"
        elif isinstance(status, InProgress):
            panel.queue_position = None
            self.record.status = "running"
        if progress is not None:
            panel.progress.max, panel.progress.value = progress[1], progress[0]
        panel._set_status(text)

    def on_enqueue(self, job: Any) -> None:
        self.record.request_id = job.request_id
        self.record.status = "queued"
        self.panel._set_status(f"submitted: request {job.request_id}")

    async def on_result(self, result: InpaintResult, outputs: list[Image.Image]) -> None:
        panel, record = self.panel, self.record
        caption = param_title(self.params, seed=result.seed)
        png = await asyncio.to_thread(self.render, self.image, self.mask, outputs, caption)
        panel._show_result(png, caption)
        panel._show_seed_used(result.seed)
        panel._history.finish(record, "completed", seed=result.seed, request_id=result.request_id)
        total = progress_from_logs(result.logs or [])
        if total is not None:
            panel.progress.max, panel.progress.value = total[1], total[1]
        else:
            panel.progress.value = panel.progress.max
        panel.progress.bar_style = "success"
        drawn = " (random)" if panel._seed_was_random else ""
        panel._set_status(f"done in {record.seconds or 0:.1f} s · seed {result.seed}{drawn} · "
                          f"request {result.request_id}")

    def on_cancelled(self, outcome: str | None) -> None:
        panel = self.panel
        panel._history.finish(self.record, "cancelled", error=None)
        panel.progress.value = 0                  # not frozen at the step it was cancelled at
        panel.progress.bar_style = ""
        panel._mark_stale("the last run was cancelled")
        panel._set_status(f"cancelled (server: {outcome})")

    def on_cancel_error(self, exc: BaseException) -> None:
        self.panel._show_error(exc)

    def on_failed(self, exc: BaseException) -> None:
        panel = self.panel
        panel._history.finish(self.record, "failed", error=error_text(exc))
        panel._show_error(exc)
        panel.progress.bar_style = "danger"
        panel._mark_stale("the last run failed (see the error above)")
        panel._set_status("failed: see the error below")

    def on_finished(self) -> None:
        self.panel._set_running(False)
        self.panel.history_html.value = self.panel._history.to_html()
