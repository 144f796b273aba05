"""The output of one inpainting job, with notebook display (static HTML from :mod:`fluxnb.pictures`).

>>> r = InpaintResult({"images": [{"url": "https://x/a.jpg", "width": 8, "height": 4,
...                                "content_type": "image/jpeg"}], "seed": 7,
...                    "timings": {"inference": 0.5}, "has_nsfw_concepts": [False],
...                    "prompt": "a fox"}, request_id="abc")
>>> r.images[0].width, r.seed
(8, 7)
"""

from __future__ import annotations

import html
import io
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..datauri import decode_data_uri, sniff_mime
from ..errors import TransportError
from ..pictures import grid_html, grid_row, param_title, preview_data_uri, thumbnail
from ..protocol import LogEntry
from ._responses import error_for_response, strip_query

__all__ = ["InpaintResult", "OutputImage"]

#: Longest side of the thumbnails embedded in ``_repr_html_``.
THUMBNAIL_SIZE = 256

Fetch = Callable[[str], bytes]
AsyncFetch = Callable[[str], Awaitable[bytes]]
FetchLogs = Callable[[], "list[LogEntry] | None"]

log = logging.getLogger("fluxnb.client")


@dataclass(frozen=True)
class OutputImage:
    """One output image as the endpoint describes it."""

    url: str
    width: int | None = None
    height: int | None = None
    content_type: str | None = None
    file_name: str | None = None
    file_size: int | None = None

    @classmethod
    def from_json(cls, data: Any) -> OutputImage:
        if isinstance(data, str):
            return cls(url=data)
        if not isinstance(data, Mapping):
            return cls(url=str(data))

        def _int(v: Any) -> int | None:
            return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

        return cls(
            url=str(data.get("url", "")),
            width=_int(data.get("width")),
            height=_int(data.get("height")),
            content_type=data.get("content_type") if isinstance(data.get("content_type"), str) else None,
            file_name=data.get("file_name") if isinstance(data.get("file_name"), str) else None,
            file_size=_int(data.get("file_size")),
        )

    def __repr__(self) -> str:
        url = self.url if len(self.url) <= 60 else self.url[:40] + f"...({len(self.url)} chars)"
        return (f"OutputImage({self.width}x{self.height} {self.content_type or '?'}, url={url!r})")


def _download(url: str) -> bytes:
    """GET ``url`` for a result that has no client (unpickled, or built by hand); failures are
    fluxnb errors (QueueHTTPError for an error status, TransportError when nothing answered)."""
    import httpx

    try:
        response = httpx.get(url, follow_redirects=True, timeout=60.0)
    except httpx.HTTPError as exc:
        raise TransportError(f"GET {strip_query(url)} failed: {type(exc).__name__}: {exc}",
                             url=strip_query(url)) from exc
    if response.status_code >= 400:
        raise error_for_response(response)
    return response.content


def _local_bytes(url: str) -> bytes | None:
    return decode_data_uri(url)[1] if url.startswith("data:") else None


class InpaintResult:
    """What a job returned.

    ``raw`` is the endpoint's JSON as received. ``images`` are :class:`OutputImage` items;
    :meth:`pil_images` (or ``await`` :meth:`apil_images`) turns them into PIL images in one call:
    data URIs are decoded locally, http(s) URLs downloaded through the client that fetched the
    result. Both are cached.
    """

    def __init__(
        self,
        raw: Mapping[str, Any],
        *,
        request_id: str | None = None,
        logs: list[LogEntry] | None = None,
        metrics: Mapping[str, Any] | None = None,
        fetch: Fetch | None = None,
        afetch: AsyncFetch | None = None,
        fetch_logs: FetchLogs | None = None,
    ):
        self.raw: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {"value": raw}
        self.request_id = request_id
        self._logs = list(logs) if logs is not None else None
        #: Without streamed logs: how to ask the server for them, once, on first access.
        self._fetch_logs = fetch_logs if logs is None else None
        self.metrics: dict[str, Any] = dict(metrics or {})
        images = self.raw.get("images")
        self.images: list[OutputImage] = [OutputImage.from_json(i) for i in images] \
            if isinstance(images, list) else []
        self._fetch = fetch
        self._afetch = afetch
        self._bytes: list[bytes] | None = None
        self._pil: list[Image.Image] | None = None

    #: The inputs that made this result, when known (see :meth:`with_inputs`); the panel sets them.
    input_image: Image.Image | None = None
    input_mask: Image.Image | None = None
    params: dict[str, Any] | None = None
    #: What the client sent for this job (see :mod:`fluxnb.client._record`), when known.
    record: dict[str, Any] | None = None

    def with_record(self, record: Mapping[str, Any] | None) -> InpaintResult:
        """Remember what was sent (a submit's record); returns ``self``."""
        if record is not None:
            self.record = dict(record)
        return self

    def metadata(self) -> dict[str, Any]:
        """The record :meth:`save` writes into each image (:func:`fluxnb.read_params` reads it):
        the inputs sent (or given to :meth:`with_inputs`), the seed used, engine and backend."""
        from ..params_meta import build_metadata

        base = dict(self.record or {})
        params = {**(self.params or {}), **base.get("params", {})}
        if self.prompt is not None:
            params.setdefault("prompt", self.prompt)
        engine = self.engine or base.get("engine") or (
            "fal-ai/flux-lora" if base.get("backend") == "fal.ai" else None)
        return build_metadata(params, seed=self.seed, engine=engine, backend=base.get("backend"),
                              inputs=base.get("inputs", {}), defaults=bool(base or self.params))

    def with_inputs(self, image: Any = None, mask: Any = None,
                    params: Mapping[str, Any] | None = None) -> InpaintResult:
        """Remember the inputs (image, mask, parameters) that made this result; returns ``self``.

        A result that knows its inputs displays itself as a before / mask / after grid and
        ``fluxnb.show_grid(result)`` needs no ``image=``/``mask=``. Images are loaded as PIL
        images; ``params`` should be the job's parameters without the image data (no key is
        ever part of them).
        """
        from ..images import load_image, load_mask

        self.input_image = None if image is None else load_image(image)
        self.input_mask = None if mask is None else load_mask(mask)
        self.params = None if params is None else {
            k: v for k, v in params.items() if k not in ("image_url", "mask_url")}
        return self

    @property
    def logs(self) -> list[LogEntry] | None:
        """The job's log lines: those streamed while waiting, else asked of the server on first
        access (one status request; ``run``/``wait`` stream them only when asked, which keeps a
        plain ``run`` cheap). None after ``logs=False``, or when the server no longer has them."""
        if self._fetch_logs is not None:
            fetch, self._fetch_logs = self._fetch_logs, None
            try:
                fetched = fetch()
            except Exception as exc:  # noqa: BLE001 - logs are extra: their absence is None
                log.debug("logs of %s unavailable: %s", self.request_id, type(exc).__name__)
                fetched = None
            self._logs = None if fetched is None else list(fetched)
        return self._logs

    @logs.setter
    def logs(self, value: list[LogEntry] | None) -> None:
        self._logs, self._fetch_logs = (None if value is None else list(value)), None

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without the client's download hooks (so never a connection or a key)."""
        self.logs  # noqa: B018 - resolved now: the hook does not travel
        state = dict(self.__dict__)
        state["_fetch"] = state["_afetch"] = state["_fetch_logs"] = None
        state["_pil"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "logs" in state:  # pickled before ``logs`` became a property
            state["_logs"] = state.pop("logs")
        state.setdefault("_fetch_logs", None)
        self.__dict__.update(state)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InpaintResult):
            return NotImplemented
        return (self.request_id, self.raw) == (other.request_id, other.raw)

    __hash__ = None  # type: ignore[assignment]

    # -- fields of the output ----------------------------------------------------------------

    @property
    def seed(self) -> int | None:
        return self.raw.get("seed")

    @property
    def timings(self) -> dict[str, Any]:
        timings = self.raw.get("timings")
        return dict(timings) if isinstance(timings, Mapping) else {}

    @property
    def has_nsfw_concepts(self) -> list[bool]:
        value = self.raw.get("has_nsfw_concepts")
        return list(value) if isinstance(value, list) else []

    @property
    def prompt(self) -> str | None:
        return self.raw.get("prompt")

    @property
    def engine(self) -> str | None:
        """The local server's engine name (``preview``/``null``/...), absent on fal."""
        return self.raw.get("engine")

    @property
    def notice(self) -> str | None:
        """The local preview engine's notice that the output is not a diffusion model's."""
        return self.raw.get("notice")

    # -- image data --------------------------------------------------------------------------

    def _get(self, url: str) -> bytes:
        local = _local_bytes(url)
        if local is not None:
            return local
        if self._fetch is not None:
            return self._fetch(url)
        return _download(url)

    def image_bytes(self) -> list[bytes]:
        """The encoded bytes of every output image (downloaded once, then cached)."""
        if self._bytes is None:
            self._bytes = [self._get(image.url) for image in self.images]
        return list(self._bytes)

    async def aimage_bytes(self) -> list[bytes]:
        """Async twin of :meth:`image_bytes`."""
        if self._bytes is None:
            out = []
            for image in self.images:
                local = _local_bytes(image.url)
                if local is not None:
                    out.append(local)
                elif self._afetch is not None:
                    out.append(await self._afetch(image.url))
                else:
                    import anyio.to_thread

                    out.append(await anyio.to_thread.run_sync(self._get, image.url))
            self._bytes = out
        return list(self._bytes)

    def _decode_all(self, blobs: list[bytes]) -> list[Image.Image]:
        if self._pil is None:
            images: list[Image.Image] = []
            for blob in blobs:
                img = Image.open(io.BytesIO(blob))
                img.load()
                images.append(img)
            self._pil = images
        return list(self._pil)

    def pil_images(self) -> list[Image.Image]:
        """Every output image as a PIL image, in order (cached)."""
        if self._pil is not None:
            return list(self._pil)
        return self._decode_all(self.image_bytes())

    async def apil_images(self) -> list[Image.Image]:
        """Async twin of :meth:`pil_images`."""
        if self._pil is not None:
            return list(self._pil)
        return self._decode_all(await self.aimage_bytes())

    def save(self, directory: str | os.PathLike[str], *, stem: str | None = None,
             extra: Mapping[str, Any] | None = None) -> list[Path]:
        """Write the output images and a JSON sidecar into ``directory``; return the paths.

        Files are ``{stem}_{i}.{ext}`` plus ``{stem}.json`` (``raw``, request id, metrics, logs,
        and ``extra`` such as the inputs that made it); ``stem`` defaults to the request id.
        Each PNG / JPEG carries the job's parameters (:meth:`metadata`; read them back with
        :func:`fluxnb.read_params`), its pixels untouched. Nothing written holds a key.
        """
        from ..params_meta import embed_metadata

        meta = self.metadata()
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        stem = stem or (self.request_id or "result")
        paths = []
        for i, blob in enumerate(self.image_bytes()):
            mime = sniff_mime(blob) or (self.images[i].content_type or "image/png")
            ext = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}.get(mime, "bin")
            path = folder / f"{stem}_{i}.{ext}"
            path.write_bytes(embed_metadata(blob, meta))
            paths.append(path)
        sidecar = folder / f"{stem}.json"
        sidecar.write_text(json.dumps({**self.to_json(), **(extra or {})}, indent=2, default=str))
        paths.append(sidecar)
        return paths

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe record: the output plus request id, metrics and logs."""
        return {
            "request_id": self.request_id,
            "output": self.raw,
            "metrics": self.metrics,
            "logs": [entry.to_json() for entry in self.logs] if self.logs is not None else None,
        }

    # -- display -----------------------------------------------------------------------------

    def __repr__(self) -> str:
        sizes = ", ".join(f"{i.width}x{i.height}" for i in self.images)
        parts = [f"request_id={self.request_id!r}", f"images=[{sizes}]", f"seed={self.seed!r}"]
        if self.timings:
            parts.append("timings={" + ", ".join(
                f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}"
                for k, v in self.timings.items()) + "}")
        if self.prompt is not None:
            prompt = self.prompt if len(self.prompt) <= 50 else self.prompt[:47] + "..."
            parts.append(f"prompt={prompt!r}")
        if self.engine:
            parts.append(f"engine={self.engine!r}")
        return "InpaintResult(" + ", ".join(parts) + ")"

    def _thumbnails(self) -> list[str]:
        """``<img>`` tags with embedded base64 thumbnails (they survive nbconvert)."""
        try:
            pil = self.pil_images()
        except Exception:  # display must never raise: fall back to linking the URLs
            return [f'<img src="{html.escape(i.url)}" style="max-width:{THUMBNAIL_SIZE}px">'
                    for i in self.images if i.url.startswith(("http://", "https://"))]
        tags = []
        for img in pil:
            thumb = thumbnail(img, THUMBNAIL_SIZE)
            tags.append(f'<img src="{preview_data_uri(thumb)}" width="{thumb.width}" '
                        f'height="{thumb.height}" style="margin:2px">')
        return tags

    def _repr_html_(self) -> str:
        rows = []

        def row(name: str, value: Any) -> None:
            rows.append(f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
                        f"<td style='text-align:left'>{html.escape(str(value))}</td></tr>")

        if self.prompt is not None:
            row("prompt", self.prompt)
        row("seed", self.seed)
        if self.timings:
            row("timings", ", ".join(f"{k}: {v:.3g} s" if isinstance(v, (int, float)) else f"{k}: {v}"
                                     for k, v in self.timings.items()))
        if self.images:
            row("size", ", ".join(f"{i.width}x{i.height}" for i in self.images))
        if any(self.has_nsfw_concepts):
            row("nsfw", self.has_nsfw_concepts)
        if self.engine:
            row("engine", self.engine)
        if self.request_id:
            row("request_id", self.request_id)
        grid = ""
        if self.input_image is not None and self.images:
            try:
                grid = grid_html([grid_row(self.input_image, self.input_mask, self.pil_images(),
                                           param_title(self.params, seed=self.seed))])
            except Exception:  # display must never raise: fall back to the thumbnails below
                grid = ""
        notice = ""
        if self.notice:
            notice = f"<p style='color:#a60'><b>Note:</b> {html.escape(str(self.notice))}</p>"
        pictures = grid or "".join(self._thumbnails())
        return ("<div class='fluxnb-result'>" + pictures + notice
                + "<table>" + "".join(rows) + "</table></div>")
