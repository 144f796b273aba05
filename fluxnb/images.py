"""Turn whatever a notebook holds into what the endpoint takes: an http(s) URL or a data URI.

Accepted for ``image_url`` / ``mask_url``:

- an ``http(s)://`` URL or a ``data:`` URI string: passed through untouched;
- a file path (``str`` or ``os.PathLike``): read; a missing file is a ``FileNotFoundError``;
- ``bytes``: PNG and JPEG images pass through as they are; other formats (WebP, GIF, BMP, ...)
  are decoded and re-encoded as PNG. A mask passes through only when it is PNG; anything else is
  decoded, converted to mode ``L`` and re-encoded as PNG;
- a PIL image: encoded as PNG (lossless); masks are converted to mode ``L`` first;
- a numpy array: ``uint8`` HxW / HxWx1 / HxWx3 / HxWx4, ``bool`` masks, floats in 0..1. A mask
  array holding only 0 and 1 (what segmentation code returns) is binary: 1 becomes 255 (repaint).

>>> from PIL import Image
>>> to_data_uri(Image.new("RGB", (4, 4)))[:22]
'data:image/png;base64,'
>>> to_data_uri("https://example.com/a.png")
'https://example.com/a.png'
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from PIL import Image

from .datauri import decode_data_uri, encode_data_uri, sniff_mime

__all__ = ["encode_image", "image_size_of", "is_url", "load_image", "load_mask", "to_data_uri"]

_URL_PREFIXES = ("http://", "https://", "data:")
_PASS_THROUGH = ("image/png", "image/jpeg")


def is_url(obj: Any) -> bool:
    """True for a string the endpoint takes as it is: an http(s) URL or a data URI."""
    return isinstance(obj, str) and obj.startswith(_URL_PREFIXES)


def _describe(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else text[:60] + "..."


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _normalise_mode(img: Image.Image, *, mask: bool) -> Image.Image:
    if mask:
        return img if img.mode == "L" else img.convert("L")
    if img.mode in ("RGB", "RGBA", "L"):
        return img
    if img.mode in ("LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA")
    return img.convert("RGB")


def _array_to_pil(arr: Any, *, mask: bool) -> Image.Image:
    import numpy as np

    a = np.asarray(arr)
    shape = tuple(a.shape)
    if a.ndim == 3 and shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or 0 in a.shape:
        raise ValueError(
            f"cannot use an array of shape {shape} as an image: expected HxW, HxWx1, HxWx3 or HxWx4"
        )
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"float array of shape {shape} has NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float array of shape {shape} has values {lo:g}..{hi:g}; float images must be in 0..1"
            )
        a = np.rint(a * 255.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        if a.dtype != np.uint8:
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi > 255:
                raise ValueError(
                    f"{a.dtype} array of shape {shape} has values {lo}..{hi}; integer images must be"
                    " in 0..255 (use uint8)"
                )
            a = a.astype(np.uint8)
        if mask and int(a.max()) == 1:
            a = a * np.uint8(255)  # 0/1, what segmentation code returns: a binary mask
    else:
        raise ValueError(f"cannot use an array of dtype {a.dtype} (shape {shape}) as an image")
    a = np.ascontiguousarray(a)
    img = Image.fromarray(a)  # uint8: HxW -> L, HxWx3 -> RGB, HxWx4 -> RGBA
    return img.convert("L") if mask and img.mode != "L" else img


def _decode(data: bytes, what: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # PIL raises several types for undecodable data
        head = data[:16]
        raise ValueError(f"{what} is not a readable image ({len(data)} bytes starting {head!r}): {exc}") \
            from None
    return img


def _bytes_to_payload(data: bytes, *, mask: bool, what: str) -> tuple[bytes, str]:
    mime = sniff_mime(data)
    if mask:
        if mime == "image/png":
            return data, mime
    elif mime in _PASS_THROUGH:
        return data, mime
    img = _decode(data, what)
    return _png_bytes(_normalise_mode(img, mask=mask)), "image/png"


def _read_path(obj: str | os.PathLike[str]) -> bytes:
    path = Path(obj).expanduser()
    if not path.is_file():
        if path.exists():
            raise IsADirectoryError(f"image path {str(path)!r} is not a file")
        raise FileNotFoundError(f"image file not found: {str(path)!r}")
    return path.read_bytes()


def encode_image(obj: Any, *, mask: bool = False) -> tuple[bytes, str] | str:
    """The upload-ready form of ``obj``: a URL string untouched, else ``(data, mime)``.

    See the module docstring for the accepted types and what is re-encoded.
    """
    if isinstance(obj, str) and is_url(obj):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return _bytes_to_payload(_read_path(obj), mask=mask, what=f"file {os.fspath(obj)!r}")
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _bytes_to_payload(bytes(obj), mask=mask, what="bytes")
    if isinstance(obj, Image.Image):
        return _png_bytes(_normalise_mode(obj, mask=mask)), "image/png"
    if hasattr(obj, "__array_interface__") or type(obj).__module__.split(".")[0] == "numpy":
        return _png_bytes(_array_to_pil(obj, mask=mask)), "image/png"
    if hasattr(obj, "read"):
        data = obj.read()
        if isinstance(data, (bytes, bytearray)):
            return _bytes_to_payload(bytes(data), mask=mask, what="file object")
    kind = "mask" if mask else "image"
    raise TypeError(
        f"cannot use {_describe(obj)} (type {type(obj).__name__}) as an {kind}: pass an http(s) URL,"
        " a data URI, a file path, bytes, a PIL image or a numpy array"
    )


def to_data_uri(obj: Any, *, mask: bool = False) -> str:
    """``obj`` as a string the endpoint accepts: URLs and data URIs untouched, anything else a data URI.

    >>> import numpy as np
    >>> to_data_uri(np.zeros((2, 2), bool), mask=True).startswith("data:image/png;base64,")
    True
    """
    encoded = encode_image(obj, mask=mask)
    if isinstance(encoded, str):
        return encoded
    data, mime = encoded
    return encode_data_uri(data, mime)


def _fetch_url(url: str) -> bytes:
    """The bytes behind a data URI or an http(s) URL; a failed download is a fluxnb error
    (QueueHTTPError for an error status, TransportError when nothing answered)."""
    if url.startswith("data:"):
        return decode_data_uri(url)[1]
    import httpx

    from .errors import QueueHTTPError, TransportError

    shown = url.split("?", 1)[0]  # a signed URL's query stays out of messages
    try:
        response = httpx.get(url, follow_redirects=True, timeout=30.0)
    except httpx.HTTPError as exc:
        raise TransportError(f"GET {shown} failed: {type(exc).__name__}: {exc}", url=shown) from exc
    if response.status_code >= 400:
        raise QueueHTTPError(response.status_code, f"downloading the image {shown}: "
                             f"{response.reason_phrase or 'error'}", url=shown)
    return response.content


def _load(obj: Any, *, mask: bool) -> Image.Image:
    if isinstance(obj, Image.Image):
        img = obj
    elif isinstance(obj, str) and is_url(obj):
        img = _decode(_fetch_url(obj), f"{obj[:60]!r}")
    elif isinstance(obj, (str, os.PathLike)):
        img = _decode(_read_path(obj), f"file {os.fspath(obj)!r}")
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        img = _decode(bytes(obj), "bytes")
    elif hasattr(obj, "__array_interface__") or type(obj).__module__.split(".")[0] == "numpy":
        img = _array_to_pil(obj, mask=mask)
    else:
        encoded = encode_image(obj, mask=mask)  # raises a clear TypeError for unknown types
        img = _decode(encoded[0] if isinstance(encoded, tuple) else _fetch_url(encoded), "input")
    if mask:
        return img if img.mode == "L" else img.convert("L")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(obj: Any) -> Image.Image:
    """Any accepted image input as an RGB PIL image (http(s) URLs are downloaded)."""
    return _load(obj, mask=False)


def load_mask(obj: Any) -> Image.Image:
    """Any accepted mask input as a mode-``L`` PIL image (white = repaint); a 0/1 array is binary.

    >>> import numpy as np
    >>> load_mask(np.array([[0, 1]], np.uint8)).getpixel((1, 0))
    255
    """
    return _load(obj, mask=True)


def image_size_of(obj: Any) -> tuple[int, int] | None:
    """``(width, height)`` of an image input, read from its header where it has one; None for an
    http(s) URL (not downloaded) or an input that cannot be read.

    >>> import numpy as np
    >>> image_size_of(np.zeros((4, 6, 3), np.uint8)), image_size_of("https://x/i.png")
    ((6, 4), None)
    """
    if isinstance(obj, Image.Image):
        return obj.size
    if isinstance(obj, str) and obj.startswith(("http://", "https://")):
        return None
    if hasattr(obj, "__array_interface__") or type(obj).__module__.split(".")[0] == "numpy":
        shape: tuple[int, ...] = tuple(getattr(obj, "shape", ()))
        return (int(shape[1]), int(shape[0])) if len(shape) >= 2 else None
    try:
        if isinstance(obj, str) and obj.startswith("data:"):
            data = decode_data_uri(obj)[1]
        elif isinstance(obj, (str, os.PathLike)):
            data = _read_path(obj)
        elif isinstance(obj, (bytes, bytearray, memoryview)):
            data = bytes(obj)
        else:
            return None
        with Image.open(io.BytesIO(data)) as img:  # the header only: no pixel is decoded
            return int(img.width), int(img.height)
    except Exception:  # noqa: BLE001 - encoding the input later says what is wrong with it
        return None
