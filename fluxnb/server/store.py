"""Where finished jobs keep their output: encoding, result files behind unguessable tokens, and
eviction of the oldest results.

The job service talks to a :class:`ResultStore`; :class:`InMemoryResultStore` (an index in
memory, files in a temp dir that :meth:`~ResultStore.close` deletes) is the one shipped today,
and a durable store only has to implement the same methods.

>>> from PIL import Image
>>> from fluxnb.server.engines import EngineOutput, EngineRequest
>>> store = InMemoryResultStore(max_results=1)
>>> store.open()
>>> request = EngineRequest(image=Image.new("RGB", (4, 4)), mask=Image.new("L", (4, 4)),
...                         params={"prompt": "p", "output_format": "png"}, seed=7)
>>> saved = store.save("job-1", EngineOutput(images=[Image.new("RGB", (4, 4))]), request, 0.5)
>>> saved.body["images"][0]["url"].startswith(FILES_PREFIX), saved.body["seed"]
(True, 7)
>>> store.keep("job-1", saved.files_token), store.keep("job-2", None)
([], ['job-1'])
>>> store.close()
"""

from __future__ import annotations

import hashlib
import io
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from ..datauri import encode_data_uri
from ..params_meta import build_metadata, embed_metadata, input_digest
from .engines import EngineOutput, EngineRequest

__all__ = ["FILES_PREFIX", "InMemoryResultStore", "ResultStore", "StoredResult", "absolute_urls",
           "encode_image", "file_metadata"]

#: Where the server serves result files: ``/_fluxnb/files/{token}/{name}``.
FILES_PREFIX = "/_fluxnb/files/"

_JPEG_QUALITY = 95


@dataclass(frozen=True)
class StoredResult:
    """A job's result body (fal's output JSON, file URLs relative to the server) and the token
    of its files (None for ``sync_mode``, whose images are data URIs inside the body)."""

    body: dict[str, Any]
    files_token: str | None


class ResultStore(Protocol):
    """What the job service needs from a result store. Every method is thread-safe; ``keep`` is
    called with the service's lock held, so a store must never call back into the service."""

    def open(self) -> None:
        """Get ready to store (make a folder, open a database); called by ``JobService.start``."""

    def close(self) -> None:
        """Let go of everything stored; called by ``JobService.stop``."""

    def save(self, job_id: str, output: EngineOutput, request: EngineRequest,
             elapsed: float) -> StoredResult:
        """Encode an engine's images (and write their files) for one job; from a worker thread."""

    def keep(self, job_id: str, files_token: str | None) -> list[str]:
        """Record a COMPLETED job; returns the ids of the jobs evicted to make room (their
        files are gone), oldest first."""

    def expire(self, now: float | None = None) -> list[str]:
        """Evict the results kept longer than the store's age limit (``now``: ``time.time()``);
        returns the evicted job ids, oldest first. The service calls it periodically."""

    def file(self, token: str, name: str) -> tuple[Path, str] | None:
        """(path, content type) of a stored result file, or None."""

    def __len__(self) -> int:
        """How many completed jobs are kept."""


class InMemoryResultStore:
    """The last ``max_results`` completed jobs, indexed in memory; their files live in a temp dir
    (removed by :meth:`close`, or when the store is garbage collected). Results older than
    ``keep_results`` seconds go at :meth:`expire`, and the oldest go while the files take more
    than ``max_bytes``."""

    def __init__(self, max_results: int = 1000, *, keep_results: float | None = None,
                 max_bytes: int | None = None):
        self.max_results = max_results
        self.keep_results = keep_results
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        # job id -> (files token, kept at, time.time()), oldest first
        self._kept: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._files: dict[str, tuple[Path, dict[str, str], int]] = {}  # token -> dir, names, bytes
        self._bytes = 0  # of the kept jobs' files
        self._dir: Path | None = None

    def open(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="fluxnb-server-"))
        # this also covers a notebook that exits without stopping the server
        weakref.finalize(self, shutil.rmtree, str(self._dir), ignore_errors=True)

    def close(self) -> None:
        with self._lock:  # the index stays (stats still count it); its files are gone
            directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def save(self, job_id: str, output: EngineOutput, request: EngineRequest,
             elapsed: float) -> StoredResult:
        params = request.params
        fmt = params.get("output_format", "jpeg")
        sync = bool(params.get("sync_mode"))
        ext, mime = ("png", "image/png") if fmt == "png" else ("jpg", "image/jpeg")
        token = secrets.token_urlsafe(18)
        directory: Path | None = None
        if not sync:
            if self._dir is None:
                raise RuntimeError("the result store is not open")
            directory = self._dir / token
            directory.mkdir()
        images: list[dict[str, Any]] = []
        written: dict[str, str] = {}
        size = 0
        meta = file_metadata(request, output)
        for i, img in enumerate(output.images):
            data = embed_metadata(encode_image(img, fmt), meta)
            name = f"{job_id}-{i}.{ext}"
            if directory is None:
                url = encode_data_uri(data, mime)
            else:
                (directory / name).write_bytes(data)
                written[name] = mime
                size += len(data)
                url = f"{FILES_PREFIX}{token}/{name}"
            images.append({"url": url, "width": img.width, "height": img.height,
                           "content_type": mime, "file_name": name, "file_size": len(data)})
        if directory is None:
            return StoredResult(_result_body(images, output, request, elapsed), None)
        with self._lock:
            self._files[token] = (directory, written, size)
        return StoredResult(_result_body(images, output, request, elapsed), token)

    def keep(self, job_id: str, files_token: str | None) -> list[str]:
        evicted: list[str] = []
        with self._lock:
            self._kept[job_id] = (files_token, time.time())
            entry = self._files.get(files_token) if files_token is not None else None
            self._bytes += entry[2] if entry is not None else 0
            self._kept_locked(job_id, files_token, entry)
            while len(self._kept) > self.max_results or (
                    self.max_bytes is not None and self._bytes > self.max_bytes
                    and len(self._kept) > 1):
                evicted.append(self._evict_oldest_locked())
            self._evicted_locked(evicted)
        return evicted

    def expire(self, now: float | None = None) -> list[str]:
        evicted: list[str] = []
        if self.keep_results is None:
            return evicted
        cutoff = (time.time() if now is None else now) - self.keep_results
        with self._lock:
            while self._kept and next(iter(self._kept.values()))[1] <= cutoff:
                evicted.append(self._evict_oldest_locked())
            self._evicted_locked(evicted)
        return evicted

    def _evict_oldest_locked(self) -> str:
        old_id, (old_token, _kept_at) = self._kept.popitem(last=False)
        entry = self._files.pop(old_token, None) if old_token is not None else None
        if entry is not None:
            self._bytes -= entry[2]
            shutil.rmtree(entry[0], ignore_errors=True)
        return old_id

    def _kept_locked(self, job_id: str, files_token: str | None,
                     entry: tuple[Path, dict[str, str], int] | None) -> None:
        """A hook: a job's result was kept (a durable store writes its index)."""

    def _evicted_locked(self, job_ids: list[str]) -> None:
        """A hook: these results were evicted."""

    def file(self, token: str, name: str) -> tuple[Path, str] | None:
        with self._lock:
            entry = self._files.get(token)
            if entry is None or name not in entry[1]:
                return None
            return entry[0] / name, entry[1][name]

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)


def _result_body(images: list[dict[str, Any]], output: EngineOutput, request: EngineRequest,
                 elapsed: float) -> dict[str, Any]:
    nsfw = output.has_nsfw_concepts
    if nsfw is None or len(nsfw) != len(images):
        nsfw = [False] * len(images)
    timings = {"inference": round(elapsed, 6), **dict(output.timings)}
    result: dict[str, Any] = {"images": images, "timings": timings, "seed": request.seed,
                              "has_nsfw_concepts": [bool(x) for x in nsfw],
                              "prompt": request.prompt}
    for key, value in output.extra.items():
        result.setdefault(key, value)
    return result


def file_metadata(request: EngineRequest, output: EngineOutput) -> dict[str, Any]:
    """The parameters written into a job's image files (:mod:`fluxnb.params_meta`): the job's
    validated inputs and seed, never an owner's token, never an input image: an http(s) input by
    its URL (no userinfo/query), a data-URI input by the sha256 of its decoded pixels."""
    inputs = {}
    for name, image in (("image_url", request.image), ("mask_url", request.mask)):
        given = str(request.params.get(name, ""))
        inputs[name] = input_digest(given) if given.startswith(("http://", "https://")) else {
            "pixels_sha256": hashlib.sha256(image.tobytes()).hexdigest(), "mode": image.mode,
            "size": list(image.size)}
    engine = output.extra.get("engine")
    return build_metadata(request.params, seed=request.seed, inputs=inputs,
                          engine=str(engine) if engine is not None else None,
                          backend="fluxnb server")


def encode_image(img: Image.Image, fmt: str) -> bytes:
    """PNG (``fmt == "png"``, keeping alpha and grey) or JPEG quality 95 (anything else)."""
    buf = io.BytesIO()
    if fmt == "png":
        if img.mode not in ("RGB", "RGBA", "L", "LA"):
            img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        img.save(buf, format="PNG")
    else:
        if img.mode != "RGB":
            img = img.convert("RGB")
        img.save(buf, format="JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue()


def absolute_urls(result: dict[str, Any], base: str) -> dict[str, Any]:
    """The stored result with relative file URLs made absolute for this request's host.

    >>> absolute_urls({"images": [{"url": "/_fluxnb/files/t/a.png"}]}, "http://h:1")["images"]
    [{'url': 'http://h:1/_fluxnb/files/t/a.png'}]
    """
    images = result.get("images")
    if not isinstance(images, list):
        return result
    out = dict(result)
    out["images"] = [
        {**img, "url": base + img["url"]}
        if isinstance(img, dict) and str(img.get("url", "")).startswith("/") else img
        for img in images
    ]
    return out
