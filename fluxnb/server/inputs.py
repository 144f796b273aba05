"""Turning ``image_url`` / ``mask_url`` into checked PIL images: data URIs, http(s) downloads,
size and decompression-bomb limits, masks that repaint nothing, and the mask/image alignment.

Every failure is an :class:`InputError` naming the field, which the server turns into fal's
422 ``{"detail": [{"loc": ["body", field], "msg", "type"}]}``.

>>> from fluxnb.server.inputs import ImageLimits, decode_image_uri
>>> decode_image_uri("data:image/png;base64,AAAA", "mask_url", ImageLimits())
Traceback (most recent call last):
...
fluxnb.server.inputs.InputError: mask_url: the data is not an image (no known image signature)
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image

from ..datauri import decode_data_uri, sniff_mime
from ..errors import MaskMismatchError
from ..maskcheck import aspect_mismatch, empty_mask_reason, fit_mask
from ..schema import resolve_image_size
from .pinned import FetchPolicy, FetchRefused, checked_addresses, send_pinned

__all__ = [
    "DownloadStopped",
    "FetchPolicy",
    "ImageLimits",
    "InputError",
    "check_mask",
    "decode_image_uri",
    "fetch_image",
    "load_image_bytes",
    "prepare_pair",
]

_MAX_REDIRECTS = 3
_URL_ECHO = 100

logger = logging.getLogger("fluxnb.server")


class InputError(Exception):
    """A bad image input: ``field`` (e.g. ``mask_url``), a message and fal's error ``type``."""

    def __init__(self, field: str, message: str, error_type: str):
        self.field = field
        self.message = message
        self.error_type = error_type
        super().__init__(f"{field}: {message}")

    def detail(self) -> list[dict[str, Any]]:
        """fal's 422 ``detail`` list for this error."""
        return [{"loc": ["body", self.field], "msg": f"{self.field}: {self.message}",
                 "type": self.error_type}]


class DownloadStopped(Exception):
    """A download was abandoned because its job was cancelled."""


@dataclass(frozen=True)
class ImageLimits:
    """Caps on one input image: encoded bytes and decoded pixels; ``fetch`` says which
    addresses http(s) inputs may be downloaded from."""

    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 50_000_000
    fetch: FetchPolicy = FetchPolicy()


def _short_url(url: str) -> str:
    return url if len(url) <= _URL_ECHO else url[: _URL_ECHO - 3] + "..."


def load_image_bytes(data: bytes, field: str, limits: ImageLimits, mode: str) -> Image.Image:
    """Decode encoded image bytes into a loaded PIL image of ``mode`` ("RGB" or "L").

    The pixel count is checked from the header *before* any pixel is decoded, and Pillow's own
    decompression-bomb guard is turned into the same ``image_too_large`` error.
    """
    if len(data) > limits.max_bytes:
        raise InputError(field, f"the image is {len(data)} bytes; the limit is {limits.max_bytes}",
                         "image_too_large")
    if not data:
        raise InputError(field, "the image is empty", "image_decode_error")
    try:
        img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(field, f"the image has too many pixels ({exc})", "image_too_large") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the caller's bad input
        raise InputError(field, f"cannot decode the image ({type(exc).__name__})",
                         "image_decode_error") from None
    width, height = img.size
    if width * height > limits.max_pixels:
        img.close()
        raise InputError(field, f"the image is {width}x{height} = {width * height} pixels; the "
                                f"limit is {limits.max_pixels}", "image_too_large")
    if width < 1 or height < 1:
        raise InputError(field, f"the image is {width}x{height}", "image_decode_error")
    try:
        img.load()
        source: Image.Image = img
        if source.mode == "P" and "transparency" in source.info:
            source = source.convert("RGBA")
        out = source.convert(mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(field, f"the image has too many pixels ({exc})", "image_too_large") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise InputError(field, f"cannot decode the image ({type(exc).__name__}: {exc})"[:300],
                         "image_decode_error") from None
    return out


def decode_image_uri(uri: str, field: str, limits: ImageLimits, mode: str = "RGB") -> Image.Image:
    """Decode a ``data:`` URI holding an image (checked like :func:`load_image_bytes`)."""
    # base64 is 4/3 of the payload: refuse oversized text before decoding it
    if len(uri) > limits.max_bytes * 4 // 3 + 1024:
        raise InputError(field, f"the data URI is {len(uri)} characters; the image limit is "
                                f"{limits.max_bytes} bytes", "image_too_large")
    try:
        _mime, data = decode_data_uri(uri)
    except ValueError as exc:
        raise InputError(field, str(exc), "image_decode_error") from None
    if sniff_mime(data) is None and not _pillow_can_identify(data):
        raise InputError(field, "the data is not an image (no known image signature)",
                         "image_decode_error")
    return load_image_bytes(data, field, limits, mode)


def _pillow_can_identify(data: bytes) -> bool:
    # Formats sniff_mime does not know (TIFF, ...) still count when Pillow recognises them.
    return data[:4] in (b"II*\x00", b"MM\x00*")


def _download(url: str, field: str, limits: ImageLimits, timeout: float,
              should_stop: Callable[[], bool] | None, shown: str) -> bytes:
    """The bytes at ``url``, every hop checked by ``limits.fetch`` before connecting; the
    messages of the :class:`InputError` raised here are detailed (for the log or the owner) and
    name the URL as ``shown``."""
    deadline = time.monotonic() + 3 * timeout
    current = httpx.URL(url)
    # trust_env=False: an environment proxy would connect on our behalf, past the checks
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _hop in range(_MAX_REDIRECTS + 1):
            addresses = checked_addresses(current, limits.fetch)
            response = send_pinned(client, current, addresses)
            try:
                if response.is_redirect:
                    current = current.join(response.headers["location"])
                    continue
                if response.status_code >= 400:
                    raise InputError(field, f"could not download {shown}: HTTP "
                                            f"{response.status_code}", "file_download_error")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limits.max_bytes:
                    raise InputError(field, f"{shown} is {declared} bytes; the limit "
                                            f"is {limits.max_bytes}", "image_too_large")
                buf = bytearray()
                for chunk in response.iter_bytes():
                    buf += chunk
                    if should_stop is not None and should_stop():
                        raise DownloadStopped(field)
                    if time.monotonic() > deadline:
                        raise InputError(field, f"downloading {shown} took longer than "
                                                f"{3 * timeout:g} s", "file_download_error")
                    if len(buf) > limits.max_bytes:
                        raise InputError(field, f"{shown} is over the limit of "
                                                f"{limits.max_bytes} bytes", "image_too_large")
                return bytes(buf)
            finally:
                response.close()
    raise InputError(field, f"could not download {shown}: more than {_MAX_REDIRECTS} "
                            "redirects", "file_download_error")


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` for the log (paths and queries may carry tokens)."""
    try:
        parsed = httpx.URL(url)
        return f"{parsed.scheme}://{parsed.netloc.decode('ascii', 'replace')}"
    except Exception:  # noqa: BLE001 - an unparsable URL
        return "(unparsable URL)"


def fetch_image(url: str, field: str, limits: ImageLimits, *, timeout: float,
                mode: str = "RGB", should_stop: Callable[[], bool] | None = None) -> Image.Image:
    """Download an http(s) image: ``timeout`` per network operation and ``3 * timeout`` for the
    whole download, a byte cap and at most 3 redirects, followed here one by one.

    Each hop's host is resolved once and every address checked by ``limits.fetch`` (a
    :class:`FetchPolicy`) before connecting; the connection goes to a checked address. Every
    failure (refused address, DNS, connection, HTTP status, size, not an image) is one
    ``file_download_error`` with :attr:`FetchPolicy.message`, the detail going to the server log
    only, unless the policy keeps detailed errors (the owner-only laptop server).
    ``should_stop()`` is polled between chunks; when it turns true the download ends with
    :class:`DownloadStopped`.

    >>> fetch_image("http://10.0.0.1/x.png", "mask_url", ImageLimits(), timeout=1)
    Traceback (most recent call last):
    ...
    fluxnb.server.inputs.InputError: mask_url: the server could not fetch this URL (only public ...)
    """
    policy = limits.fetch
    # the owner sees the URL; the log of a shared server gets its origin only (paths and
    # queries may carry tokens)
    shown = _short_url(url) if policy.detailed_errors else _origin(url)
    try:
        try:
            data = _download(url, field, limits, timeout, should_stop, shown)
        except (InputError, DownloadStopped, FetchRefused):
            raise
        except Exception as exc:  # noqa: BLE001 - httpx errors, bad URLs, TLS problems
            raise InputError(field, f"could not download {shown}: {type(exc).__name__}: "
                                    f"{exc}"[:400], "file_download_error") from None
        return load_image_bytes(data, field, limits, mode)
    except DownloadStopped:
        raise
    except FetchRefused as exc:
        logger.info("%s: fetch of %s refused: %s", field, _origin(url), exc)
        raise InputError(field, policy.message, "file_download_error") from None
    except InputError as exc:
        if policy.detailed_errors:
            raise
        logger.info("%s: fetch failed: %s", field, exc.message)
        raise InputError(field, policy.message, "file_download_error") from None


def check_mask(mask: Image.Image, image: Image.Image | None = None) -> None:
    """An :class:`InputError` naming ``mask_url`` when the mask repaints nothing (``mask_empty``)
    or has another aspect ratio than ``image`` (``mask_mismatch``); the rules are fluxnb's
    (:func:`fluxnb.maskcheck.empty_mask_reason`, :func:`fluxnb.maskcheck.aspect_mismatch`), so
    the client and the server refuse the same masks.

    >>> check_mask(Image.new("L", (8, 8), 255), Image.new("RGB", (16, 8)))
    Traceback (most recent call last):
    ...
    fluxnb.server.inputs.InputError: mask_url: the mask is 8x8 (aspect 1.000) but the image is 16x8 ...
    """
    reason = empty_mask_reason(mask)
    if reason is not None:
        raise InputError("mask_url", reason, "mask_empty")
    problem = None if image is None else aspect_mismatch(mask.size, image.size)
    if problem is not None:
        raise InputError("mask_url", problem, "mask_mismatch")


def prepare_pair(image: Image.Image, mask: Image.Image,
                 image_size: Any = None) -> tuple[Image.Image, Image.Image]:
    """RGB image and L mask of one size, checked with :func:`check_mask`: the mask is fitted to
    the image (``fluxnb.fit_mask``, NEAREST), then both are resized to ``image_size`` (LANCZOS /
    NEAREST) when given."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    mask = mask if mask.mode == "L" else mask.convert("L")
    check_mask(mask, image)
    try:
        mask = fit_mask(mask, image)
    except MaskMismatchError as exc:  # pragma: no cover - check_mask has refused it already
        raise InputError("mask_url", str(exc), "mask_mismatch") from None
    size = resolve_image_size(image_size, image.size)
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return image, mask
