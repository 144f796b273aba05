"""A job's inputs, before anything is sent: merge aliases, check the mask, encode, validate.

Pure except for reading image files and paths the caller passed. The submit body that comes out
is what the schema accepts; images too large to travel inline (fal only) wait for an upload.

>>> file_name("mask_url", "image/png")
'mask.png'
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from PIL import Image

from ..datauri import decode_data_uri, encode_data_uri
from ..images import encode_image, image_size_of, is_url, load_mask
from ..maskcheck import check_mask
from ..schema import (
    COST_WARNING_USD,
    INPUT_FIELDS,
    PRICE_PER_MEGAPIXEL,
    estimate_cost,
    resolve_aliases,
    resolve_image_size,
    validate_input,
)

__all__ = ["Pending", "cost_warning", "file_name", "needs_encoding", "prepare_body"]

#: Images waiting for an upload to fal storage: field -> (bytes, mime type).
Pending = dict[str, tuple[bytes, str]]
_IMAGE_FIELDS = ("image_url", "mask_url")


def _is_data_uri(value: object) -> bool:
    return isinstance(value, str) and value.startswith("data:")


def _numpy_scalar(value: Any) -> Any:
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def _merged(inputs: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    return {**resolve_aliases(inputs or {}), **resolve_aliases(fields)}  # steps= ... too


def needs_encoding(inputs: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> bool:
    """Whether :func:`prepare_body` will encode an image (blocking work an event loop avoids)."""
    merged = _merged(inputs, fields) if isinstance(inputs, Mapping) or inputs is None else {}
    return any(merged.get(name) is not None and not is_url(merged.get(name))
               for name in _IMAGE_FIELDS) or _is_data_uri(merged.get("mask_url"))


def _check_mask(body: dict[str, Any]) -> None:
    """Refuse a mask that repaints nothing, and fit it to the image (``fit_mask``: another
    aspect ratio is a MaskMismatchError, another size is resized), for every mask the client
    can see; an http(s) mask (or image) is left to the server, which checks it the same way."""
    mask = body.get("mask_url")
    if mask is None or (isinstance(mask, str) and is_url(mask) and not _is_data_uri(mask)):
        return
    image = body.get("image_url")
    loaded = load_mask(mask)
    fitted = check_mask(loaded, None if image is None else image_size_of(image))
    if fitted is not loaded or hasattr(mask, "read"):  # resized, or a stream read once
        body["mask_url"] = fitted


def prepare_body(inputs: Mapping[str, Any] | None, fields: Mapping[str, Any], *,
                 upload_over: int | None) -> tuple[dict[str, Any], Pending]:
    """Merge, encode images, validate: everything before the first byte is sent.

    Returns the body and the images larger than ``upload_over`` bytes (None: never), which must
    be uploaded first (their slot in the body holds a placeholder until then).
    """
    if inputs is not None and not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping of field -> value, not {type(inputs).__name__}")
    body = {k: _numpy_scalar(v) for k, v in _merged(inputs, fields).items()}
    _check_mask(body)
    pending: Pending = {}
    for name in _IMAGE_FIELDS:
        value = body.get(name)
        if value is None or is_url(value):
            continue
        encoded = encode_image(value, mask=name == "mask_url")
        if isinstance(encoded, str):
            body[name] = encoded
            continue
        data, mime = encoded
        if upload_over is not None and len(data) > upload_over:
            pending[name] = (data, mime)
            body[name] = "data:" + mime + ";base64,"  # placeholder, replaced after validation
        else:
            body[name] = encode_data_uri(data, mime)
    return validate_input(body), pending


def _input_size(uri: Any, upload: tuple[bytes, str] | None) -> tuple[int, int] | None:
    """(width, height) of an encoded input image (a data URI, or bytes waiting for upload)."""
    try:
        data = upload[0] if upload is not None else decode_data_uri(uri)[1]
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            return image.size
    except Exception:  # an http(s) URL, or a payload the server will judge
        return None


def cost_warning(body: Mapping[str, Any], pending: Pending) -> str | None:
    """The CostWarning text for a fal.ai job costing COST_WARNING_USD or more, else None."""
    size = _input_size(body.get("image_url"), pending.get("image_url"))
    if size is None and not isinstance(body.get("image_size"), (str, Mapping)):
        return None  # an http(s) image of unknown size: nothing to estimate without a download
    width, height = resolve_image_size(body.get("image_size"), size or (0, 0))
    count = int(body.get("num_images", INPUT_FIELDS["num_images"].default))
    cost = estimate_cost(width, height, count)
    if cost < COST_WARNING_USD:
        return None
    return (f"this fal.ai job makes {count} image{'s' if count != 1 else ''} of "
            f"{width}x{height} ({width * height * count / 1e6:.1f} MP): about "
            f"${cost:.2f} at ${PRICE_PER_MEGAPIXEL}/MP. Pass image_size= for smaller "
            "outputs (this warning is shown once per client)")


def file_name(name: str, mime: str) -> str:
    """The upload's file name for an input field: ``mask_url`` + PNG -> ``mask.png``."""
    ext = {"image/png": "png", "image/jpeg": "jpg"}.get(mime, "bin")
    return f"{name.removesuffix('_url')}.{ext}"
