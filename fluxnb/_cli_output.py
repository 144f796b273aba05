"""What ``fluxnb run`` prints on stderr: the progress bar, errors in the command line's words
(``--steps``, not ``num_inference_steps``) and what a Ctrl-C did to the job.

>>> flag_message({"loc": ["body", "num_inference_steps"], "msg": "num_inference_steps=60 is out "
...               "of range: allowed 1 to 50 (default 28)"})
'--steps 60 is out of range: allowed 1 to 50 (default 28)'
"""

from __future__ import annotations

import math
import sys
from typing import Any

from . import schema

__all__ = ["Progress", "error_text", "flag_message", "interrupted_text"]

_F = schema.INPUT_FIELDS


class Progress:
    """Shows queue position and denoising steps on stderr while a job runs; ``note`` prints a
    line above the bar, ``close`` clears it (before any error is printed)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=1, desc="submitting", unit="step", file=sys.stderr, leave=True)
        self._desc = "submitting"
        self._steps = int(fields.get("num_inference_steps", _F["num_inference_steps"].default))
        self._strength = float(fields.get("strength", _F["strength"].default))
        self._explained = False

    def note(self, text: str) -> None:
        self._bar.write(f"fluxnb: {text}", file=sys.stderr)

    def enqueued(self, job: Any) -> None:
        self.note(f"request {job.request_id} queued (Ctrl-C cancels it)")

    def _describe(self, text: str) -> None:
        if text != self._desc:
            self._desc = text
            self._bar.set_description(text, refresh=False)

    def _explain(self, total: int) -> None:
        """Say once why the bar counts fewer steps than --steps: an inpaint at strength s starts
        partway through the schedule (diffusers runs ``steps - int(steps - steps * s)``)."""
        steps, strength = self._steps, self._strength
        partial = {steps - int(steps - steps * strength), math.ceil(steps * strength - 1e-9)}
        if not self._explained and total != steps and total in partial:
            self._explained = True
            self.note(f"strength {strength:g} runs {total} of {steps} steps "
                      "(an inpaint starts partway through the denoising schedule)")

    def __call__(self, status: Any) -> None:
        from .protocol import Completed, InProgress, Queued, progress_from_logs

        if isinstance(status, Queued):
            self._describe(f"queued (position {status.position})")
            return
        progress = progress_from_logs(getattr(status, "logs", None))
        if progress:  # also on Completed: a quick job may finish before a step is seen
            self._explain(progress[1])
            self._bar.total, self._bar.n = progress[1], progress[0]
        if isinstance(status, InProgress):
            self._describe("running")
        elif isinstance(status, Completed):
            self._describe("failed" if status.error else "done")
            if not status.error:
                self._bar.n = self._bar.total
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def flag_message(error: dict[str, Any]) -> str:
    """A schema error in the command line's words: ``--steps 60 is out of range ...`` where the
    schema says ``num_inference_steps=60 ...`` (flag names from :func:`fluxnb.schema.flag_for`)."""
    msg = str(error.get("msg", error))
    loc = list(error.get("loc", []))[1:]
    if not loc or not isinstance(loc[0], str):
        return msg
    field, flag = loc[0], schema.flag_for(loc[0])
    if flag is None or not msg.startswith(field):
        return msg
    rest = msg[len(field):]
    if field == "loras" and len(loc) > 1 and isinstance(loc[1], int):
        flag = f"{flag} #{loc[1] + 1}"  # --lora is repeatable: name which one
        rest = rest[len(f"[{loc[1]}]"):].lstrip(".")
        return f"{flag} {rest}" if rest else flag
    return flag + (" " + rest[1:] if rest.startswith("=") else rest)


def error_text(exc: Exception) -> str:
    """An error's message, with schema field names replaced by the flags that set them."""
    from .errors import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(flag_message(e) for e in exc.errors)
    return str(exc)


def interrupted_text(exc: KeyboardInterrupt) -> str:
    """What became of the job a Ctrl-C stopped (the client cancels it and says so on ``exc``)."""
    request_id = getattr(exc, "request_id", None)
    if request_id is None:
        return "interrupted"
    outcome = getattr(exc, "cancel_outcome", None)
    if outcome == "CANCELLATION_REQUESTED":
        return f"interrupted; cancelled request {request_id} on the server"
    if outcome == "ALREADY_COMPLETED":
        return f"interrupted; request {request_id} had already completed"
    return f"interrupted; could not cancel request {request_id} on the server: it may still run"
