"""One job on a worker thread: its image inputs, its seed, the engine call, and every failure
turned into fal's error body.

The worker knows nothing of the queue or its lock: :meth:`Worker.run` returns a :class:`Done` or
a :class:`Failed` and the job service applies it. What the engine sees of its job is a
:class:`WorkerContext` whose log lines go through the service's public ``log()``.

>>> import threading
>>> from PIL import Image
>>> from fluxnb.server.engines import create_engine
>>> from fluxnb.server.store import InMemoryResultStore
>>> lines = []
>>> ctx = WorkerContext("job-1", threading.Event(), lambda message, level: lines.append(message))
>>> worker = Worker(create_engine("null", delay=0), InMemoryResultStore(), ImageLimits(), 5.0)
>>> params = {"prompt": "p", "seed": 3, "num_images": 1, "sync_mode": True}
>>> outcome = worker.run(params, Image.new("RGB", (8, 8)), Image.new("L", (8, 8), 255), ctx)
>>> outcome.result["seed"], lines[0]
(3, 'seed: 3')
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .engines import Engine, EngineCancelled, EngineInputError, EngineOutput, EngineRequest
from .engines.compose import default_feather, paste_back
from .inputs import DownloadStopped, ImageLimits, InputError, fetch_image, load_image_bytes, prepare_pair
from .store import ResultStore

__all__ = ["Done", "Failed", "Outcome", "Worker", "WorkerContext"]

logger = logging.getLogger("fluxnb.server")

_SEED_RANGE = 2**32
_ECHO = 500  # characters of an error message kept in logs and bodies


@dataclass(frozen=True)
class Done:
    """The engine made its images: the stored result body, its files token and the run time."""

    result: dict[str, Any]
    files_token: str | None
    elapsed: float
    cost_usd: float | None = None


@dataclass(frozen=True)
class Failed:
    """A job that ends in an error: fal's status code, body, ``error``/``error_type`` for the
    status, extra response headers, and the line to add to the job's logs."""

    status: int
    body: dict[str, Any]
    error: str
    error_type: str
    log: str
    level: str = "ERROR"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def cancelled(cls, log: str = "cancelled") -> Failed:
        """A cancel honoured (queued, downloading or between two steps)."""
        return cls(400, {"detail": "Request was cancelled", "error_type": "request_cancelled"},
                   "Request was cancelled", "request_cancelled", log, "WARN")

    @classmethod
    def timed_out(cls) -> Failed:
        """``X-Fal-Request-Timeout`` ran out before the job started."""
        return cls(504, {"detail": "Request timed out", "error_type": "request_timeout"},
                   "Request timed out", "request_timeout",
                   "request timed out before it started (X-Fal-Request-Timeout)",
                   headers={"X-Fal-Request-Timeout-Type": "user"})

    @classmethod
    def engine_failed(cls, job_id: str, engine: str, exc: BaseException, *,
                      error_type: str = "internal_error", what: str = "the engine failed") -> Failed:
        """An engine error as a short, stable message with a reference id: the exception's text
        and traceback go to the server log only (they may hold paths, hosts or secrets)."""
        ref = secrets.token_hex(6)
        logger.error("job %s: engine %s failed (ref %s)", job_id, engine, ref,
                     exc_info=(type(exc), exc, exc.__traceback__))
        message = f"{what}: {type(exc).__name__} (ref {ref}; details are in the server log)"
        return cls(500, {"detail": message, "error_type": error_type}, message, error_type,
                   message)

    @classmethod
    def bad_input(cls, detail: list[dict[str, Any]], message: str, error_type: str) -> Failed:
        """An input fal's schema accepted but that cannot be used: a 422 naming the field."""
        return cls(422, {"detail": detail}, message, error_type, message[:_ECHO])


Outcome = Done | Failed


class WorkerContext:
    """The :class:`~fluxnb.server.engines.JobContext` a worker hands the engine: ``log`` is the
    job service's public ``log()`` bound to this job."""

    def __init__(self, job_id: str, cancel: threading.Event, log: Callable[[str, str], None]):
        self.job_id = job_id
        self._cancel = cancel
        self._log = log

    def log(self, message: str, level: str = "INFO") -> None:
        self._log(message, level)

    def step(self, done: int, total: int, *, image_index: int = 0, num_images: int = 1) -> None:
        text = f"step {done}/{total}"
        if num_images > 1:
            text = f"image {image_index + 1}/{num_images}: {text}"
        self.log(text)
        self.check_cancelled()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise EngineCancelled(self.job_id)


class Worker:
    """Runs one job at a time per calling thread (the service's worker threads share one)."""

    def __init__(self, engine: Engine, store: ResultStore, limits: ImageLimits,
                 fetch_timeout: float):
        self.engine = engine
        self.store = store
        self.limits = limits
        self.fetch_timeout = fetch_timeout

    def run(self, params: dict[str, Any], image: bytes | Image.Image | None,
            mask: bytes | Image.Image | None, ctx: WorkerContext) -> Outcome:
        """Inputs (``image``/``mask``: a data URI's encoded bytes, checked at submit and decoded
        here, or an image; None: downloaded from ``params``), seed, engine call and stored
        result; never raises."""
        try:
            request = self._request(params, image, mask, ctx)
            t0 = time.perf_counter()
            output = self.engine.run(request, ctx)
            elapsed = time.perf_counter() - t0
            self._paste_back(request, output, ctx)
            stored = self.store.save(ctx.job_id, output, request, elapsed)
        except (EngineCancelled, DownloadStopped):
            return Failed.cancelled()
        except InputError as exc:
            return Failed.bad_input(exc.detail(), exc.message, exc.error_type)
        except EngineInputError as exc:
            detail = [{"loc": ["body", exc.field], "msg": str(exc), "type": exc.error_type}]
            return Failed.bad_input(detail, str(exc), exc.error_type)
        except Exception as exc:  # noqa: BLE001 - an engine bug must not kill the worker
            return Failed.engine_failed(ctx.job_id, self.engine.name, exc)
        return Done(stored.body, stored.files_token, elapsed, output.cost_usd)

    def _paste_back(self, request: EngineRequest, output: EngineOutput,
                    ctx: WorkerContext) -> None:
        """Issue 12, for every engine, before encoding: the input's own pixels beyond a feather
        band around the mask, a smooth blend inside it; the result's ``paste_back`` says what was
        done (``{"applied": true, "feather_px": N}`` or ``{"applied": false, "reason": ...}``)."""
        size = request.image.size
        if not self.engine.paste_back:
            reason = "turned off (engine option paste_back=false): the engine's raw output"
            output.extra["paste_back"] = {"applied": False, "reason": reason}
            ctx.log(f"paste_back: {reason}")
            return
        wrong = [f"{w}x{h}" for w, h in (img.size for img in output.images) if (w, h) != size]
        if wrong:
            reason = (f"the engine's output is {', '.join(wrong)}, not the input's "
                      f"{size[0]}x{size[1]}: returned as it is")
            output.extra["paste_back"] = {"applied": False, "reason": reason}
            ctx.log(f"paste_back: {reason}", "WARNING")
            return
        feather = self.engine.paste_back_feather
        feather = default_feather(*size) if feather is None else feather
        t = time.perf_counter()
        output.images = [paste_back(request.image, img, request.mask, feather)
                         for img in output.images]
        output.timings["paste_back"] = round(time.perf_counter() - t, 6)
        output.extra["paste_back"] = {"applied": True, "feather_px": feather}
        ctx.log(f"paste_back: the input's own pixels beyond {feather} px of the mask; "
                f"a {feather} px feather band blends the engine's output in")

    def _request(self, params: dict[str, Any], image_in: bytes | Image.Image | None,
                 mask_in: bytes | Image.Image | None, ctx: WorkerContext) -> EngineRequest:
        image = self._input(params, ctx, "image_url", "RGB", image_in)
        mask = self._input(params, ctx, "mask_url", "L", mask_in)
        (mw, mh), (iw, ih) = mask.size, image.size
        image, mask = prepare_pair(image, mask, params.get("image_size"))
        if (mw, mh) != (iw, ih):
            ctx.log(f"mask_url: the mask is {mw}x{mh}; resized to the image's {iw}x{ih} "
                    f"(same aspect ratio)")
        seed = params.get("seed")
        if seed is None:
            seed = secrets.randbelow(_SEED_RANGE)
            ctx.log(f"seed: {seed} (random)")
        else:
            ctx.log(f"seed: {seed}")
        return EngineRequest(image=image, mask=mask, params=dict(params), seed=int(seed))

    def _input(self, params: dict[str, Any], ctx: WorkerContext, name: str, mode: str,
               given: bytes | Image.Image | None) -> Image.Image:
        """The decoded input: queued jobs keep data URIs as encoded bytes, decoded only now."""
        if given is None:
            return self._download(params, ctx, name, mode)
        if isinstance(given, Image.Image):
            return given
        return load_image_bytes(given, name, self.limits, mode)

    def _download(self, params: dict[str, Any], ctx: WorkerContext, name: str,
                  mode: str) -> Image.Image:
        """Fetch an http(s) input in the worker (data URIs were decoded at submit)."""
        ctx.log(f"downloading {name}")
        image = fetch_image(params[name], name, self.limits, timeout=self.fetch_timeout,
                            mode=mode, should_stop=lambda: ctx.cancelled)
        ctx.check_cancelled()
        return image
