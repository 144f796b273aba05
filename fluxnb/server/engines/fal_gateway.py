"""The ``fal`` engine: a gateway that forwards each job to fal.ai's queue with the server's own key.

The class server keeps its students, quotas and results; fal.ai's fleet does the work. Each job
is submitted upstream (the already decoded inputs as PNG data URIs, ``sync_mode`` off), followed
with its logs (the upstream queue position and log lines go to the job's own logs), cancelled
upstream when the student cancels, and its images downloaded, so the class server stores and
serves them from its own URLs. The job's ``cost_usd`` is the output's megapixels at
:data:`fluxnb.schema.PRICE_PER_MEGAPIXEL`. The key is never shown: not in ``repr``, ``info()``,
logs or errors.

>>> from fluxnb.server.engines import create_engine
>>> engine = create_engine("fal", key="SECRET", upstream="http://127.0.0.1:9")
>>> engine.info()["upstream"], "SECRET" in repr(engine)
('127.0.0.1:9', False)
"""

from __future__ import annotations

import io
import logging
import time
import urllib.parse
import weakref
from typing import Any

from PIL import Image

# The gateway is a client of fal by design: it reuses fluxnb's own queue client rather than a
# second implementation of the protocol (an exception to the layers, in tests/test_layers.py).
from ...client import Job, QueueClient
from ...datauri import encode_data_uri
from ...errors import (
    CredentialsError,
    FluxnbError,
    JobCancelledError,
    JobFailedError,
    QueueHTTPError,
    TransportError,
    ValidationError,
)
from ...protocol import Completed, InProgress, LogEntry, Queued, Status
from ...schema import ENDPOINT_ID, estimate_cost
from .base import Engine, EngineCancelled, EngineInputError, EngineOutput, EngineRequest, JobContext

__all__ = ["DEFAULT_UPSTREAM", "FalGatewayEngine", "UpstreamError"]

logger = logging.getLogger("fluxnb.server")

#: fal.ai's queue: where ``--engine fal`` forwards jobs unless ``--upstream`` says otherwise.
DEFAULT_UPSTREAM = "https://queue.fal.run"
_LEVELS = frozenset({"INFO", "WARN", "ERROR", "DEBUG", "STDOUT", "STDERR"})
_SLICE = 0.05  # seconds: how often a wait between two polls looks at the cancel flag
_MAX_PIXELS = 50_000_000  # per output image, like the server's own input limit


class UpstreamError(Exception):
    """The upstream queue failed a job (an answer, or no answer): a short text that names the
    upstream's status and error type, never the key or the upstream URL."""


class FalGatewayEngine(Engine):
    """Forward jobs to a fal-compatible queue (``upstream``) with the server's own ``key``.

    ``poll_interval``: seconds between two status polls upstream; ``timeout``: seconds a job may
    take upstream before it is cancelled there and fails; ``app``: the upstream app id.
    """

    name = "fal"
    description = "forwards each job to fal.ai's queue with the server's own key"
    generative = True
    max_concurrency = None

    def __init__(self, key: str | None = None, upstream: str | None = None, *,
                 app: str = ENDPOINT_ID, poll_interval: float = 0.5, timeout: float = 3600.0,
                 request_timeout: float = 30.0, max_retries: int = 4):
        upstream = (upstream or DEFAULT_UPSTREAM).rstrip("/")
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("upstream must be an http(s) URL such as https://queue.fal.run")
        if parts.username is not None or parts.password is not None:
            raise ValueError("upstream must not carry user:password@ (the key comes from FAL_KEY "
                             "or --fal-key-file)")
        if not isinstance(key, str) or not key.strip():
            raise ValueError("the fal engine needs the server's fal key: set FAL_KEY or pass "
                             "--fal-key-file FILE")
        for label, value in (("poll_interval", poll_interval), ("timeout", timeout)):
            if not float(value) > 0:
                raise ValueError(f"{label} must be > 0 seconds, not {value}")
        self.upstream_host = parts.netloc.lower()
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self._key = key.strip()
        try:  # the key is passed explicitly: never FAL_KEY/FLUXNB_KEY read behind our back
            self._client = QueueClient(upstream, key=self._key, app=app, timeout=request_timeout,
                                       max_retries=max_retries, upload_threshold=None)
        except CredentialsError as exc:
            raise ValueError(f"the server's fal key cannot be used: {exc}") from None
        self._client._cost_warned = True  # cost is counted per job by the class server, not warned
        # the server has no engine-close hook: the connections close when the engine goes
        self._closer = weakref.finalize(self, self._client.close)

    def __repr__(self) -> str:
        return f"FalGatewayEngine(upstream={self.upstream_host!r}, key=***)"

    def info(self) -> dict[str, Any]:
        return {**super().info(), "upstream": self.upstream_host}

    def close(self) -> None:
        """Close the connections to the upstream queue."""
        self._closer()

    # -- one job -------------------------------------------------------------------------------

    def run(self, request: EngineRequest, ctx: JobContext) -> EngineOutput:
        ctx.check_cancelled()
        body = self._body(request)
        try:
            job = self._client.submit(body)
        except FluxnbError as exc:
            raise self._failure(exc, "submit") from None
        logger.info("fal gateway: upstream request %s on %s", job.request_id, self.upstream_host)
        ctx.log("upstream: submitted")
        self._follow(job, ctx)
        try:
            result = self._client.result(job)
            blobs = result.image_bytes()
        except FluxnbError as exc:
            raise self._failure(exc, "result") from None
        images = [self._decode(data, i) for i, data in enumerate(blobs)]
        if not images:
            raise UpstreamError("upstream result has no images")
        cost = sum(estimate_cost(img.width, img.height, 1) for img in images)
        nsfw = [bool(x) for x in result.has_nsfw_concepts][:len(images)]
        timings = {k: float(v) for k, v in result.timings.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return EngineOutput(images=images, timings=timings, cost_usd=cost,
                            has_nsfw_concepts=nsfw if len(nsfw) == len(images) else None,
                            extra={"engine": self.name})

    def _body(self, request: EngineRequest) -> dict[str, Any]:
        """The upstream submit body: the job's params, the decoded inputs as PNG data URIs."""
        body = {k: v for k, v in request.params.items() if v is not None}
        body["image_url"] = _png_uri(request.image)
        body["mask_url"] = _png_uri(request.mask)
        body["seed"] = request.seed
        body["sync_mode"] = False
        body["output_format"] = "png"  # lossless; the class server encodes the asked format once
        return body

    def _follow(self, job: Job, ctx: JobContext) -> None:
        """Poll upstream until COMPLETED, relaying queue position and new log lines; a cancel
        (or the job's upstream timeout) cancels upstream."""
        deadline = time.monotonic() + self.timeout
        seen: list[LogEntry] = []
        position: int | None = None
        while True:
            if ctx.cancelled:
                self._cancel(job, ctx)
                raise EngineCancelled(job.request_id)
            if time.monotonic() > deadline:
                self._cancel(job, ctx)
                raise UpstreamError(f"upstream job did not finish within {self.timeout:g} s")
            try:
                status: Status = self._client.status(job, logs=True)
            except FluxnbError as exc:
                raise self._failure(exc, "status") from None
            if isinstance(status, Queued):
                if status.position != position:
                    position = status.position
                    ctx.log(f"upstream: queue position {position}")
            else:
                seen = _relay(ctx, seen, status.logs)
                if isinstance(status, Completed):
                    return
                if isinstance(status, InProgress) and position is not None:
                    position = None
            self._pause(ctx)

    def _pause(self, ctx: JobContext) -> None:
        end = time.monotonic() + self.poll_interval
        while not ctx.cancelled and (left := end - time.monotonic()) > 0:
            time.sleep(min(_SLICE, left))

    def _cancel(self, job: Job, ctx: JobContext) -> None:
        try:
            outcome = self._client.cancel(job)
        except FluxnbError as exc:
            logger.warning("fal gateway: cancel of upstream request %s failed: %s",
                           job.request_id, type(exc).__name__)
            ctx.log("upstream: the cancel did not go through", "WARN")
            return
        ctx.log(f"upstream: cancel {outcome.lower().replace('_', ' ')}")

    def _decode(self, data: bytes, index: int) -> Image.Image:
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > _MAX_PIXELS:
                    raise UpstreamError(f"upstream image {index} is {img.width}x{img.height}, "
                                        f"over {_MAX_PIXELS} pixels")
                img.load()
                return img.convert("RGB")
        except UpstreamError:
            raise
        except Exception as exc:
            raise UpstreamError(f"upstream image {index} is not an image "
                                f"({type(exc).__name__})") from None

    def _failure(self, exc: FluxnbError, what: str) -> Exception:
        """The engine's exception for an upstream error: EngineInputError for a 422 naming a
        field, EngineCancelled for a job cancelled upstream, else an UpstreamError whose text
        names the status and type only (no URL, no key)."""
        if isinstance(exc, (ValidationError, JobFailedError)):
            field, msg, kind = _field_error(exc)
            if field is not None:
                return EngineInputError(field, self._clean(f"upstream: {msg}"), kind)
        if isinstance(exc, JobCancelledError):
            return EngineCancelled("cancelled upstream")
        if isinstance(exc, TransportError):
            return UpstreamError(f"upstream {what}: no answer after {exc.attempts} attempt(s)")
        code = getattr(exc, "status_code", None)
        error_type = getattr(exc, "error_type", None)
        text = f"upstream {what}: HTTP {code}" if code is not None else f"upstream {what} failed"
        if error_type:
            text += f" ({error_type})"
        if isinstance(exc, QueueHTTPError) and code in (401, 403):
            text += ": the upstream refused the server's fal key"
        return UpstreamError(self._clean(text))

    def _clean(self, text: str) -> str:
        return text.replace(self._key, "***")[:300]


def _png_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return encode_data_uri(buf.getvalue(), "image/png")


def _relay(ctx: JobContext, seen: list[LogEntry], logs: list[LogEntry] | None) -> list[LogEntry]:
    """Log the lines of ``logs`` not seen yet (the upstream sends all its logs each time, or only
    the new ones); returns the lines seen so far."""
    if not logs:
        return seen
    if len(logs) >= len(seen) and logs[:len(seen)] == seen:
        new, seen = logs[len(seen):], list(logs)
    else:
        new, seen = list(logs), seen + list(logs)
    for entry in new:
        level = entry.level if entry.level in _LEVELS else "INFO"
        ctx.log(f"upstream: {entry.message}"[:500], level)
    return seen


def _field_error(exc: ValidationError | JobFailedError) -> tuple[str | None, str, str]:
    """(field, message, error type) of a 422 naming a field, else (None, "", "")."""
    if isinstance(exc, ValidationError):
        items: Any = exc.errors
    elif exc.status_code == 422:
        items = exc.error
    else:
        return None, "", ""
    if isinstance(items, list):
        for item in items:
            loc = item.get("loc") if isinstance(item, dict) else None
            if isinstance(loc, list) and len(loc) > 1 and isinstance(loc[1], str):
                return loc[1], str(item.get("msg", "invalid value")), str(item.get("type", "value_error"))
    return None, "", ""
