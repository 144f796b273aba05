"""A sweep's input images: each encoded once (by object), identified by content, masks fitted.

Nothing here touches the network: http(s) URLs are kept as they are (identified by the URL),
anything else becomes a data URI whose sha256 is its identity in cell keys and the cache.

>>> book = ImageBook()
>>> book.encode("image_url", "https://x/i.png").label
'https://x/i.png'
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

from ..datauri import decode_data_uri
from ..errors import ValidationError
from ..images import to_data_uri
from ..masks import check_mask

__all__ = ["IMAGE_FIELDS", "ImageBook", "ImageInput", "canonical_json"]

#: The input fields that hold images.
IMAGE_FIELDS = ("image_url", "mask_url")
#: Shown in the summary and kept in the log as the image/mask "value": a short content hash.
_LABEL_HEX = 12


def canonical_json(value: Any) -> str:
    """Sorted-key, compact JSON: the same inputs always give the same text (and hash)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


@dataclass(frozen=True)
class ImageInput:
    """An image or mask as sent (``uri``: data URI or http(s) URL) and its identity.

    ``digest`` is the sha256 of the bytes for inline images (the URL's hash for http(s) URLs,
    whose content is not downloaded); ``label`` is the short form used in frames and titles.
    """

    uri: str
    digest: str
    label: str
    size: tuple[int, int] | None
    data: bytes | None = field(default=None, repr=False)


def _image_input(obj: Any, *, mask: bool) -> ImageInput:
    if isinstance(obj, str) and obj.startswith(("http://", "https://")):
        digest = hashlib.sha256(obj.encode()).hexdigest()
        short = obj if len(obj) <= 48 else obj[:45] + "..."
        return ImageInput(obj, "url:" + digest, short, None)
    uri = to_data_uri(obj, mask=mask)
    _, data = decode_data_uri(uri)
    digest = hashlib.sha256(data).hexdigest()
    size = None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            size = (int(img.width), int(img.height))
    except Exception:  # noqa: BLE001 - the server will say what is wrong with it
        size = None
    return ImageInput(uri, "sha256:" + digest, "sha256:" + digest[:_LABEL_HEX], size, data)


def _fitted_mask(mask: ImageInput, size: tuple[int, int] | None) -> ImageInput:
    """``mask`` checked with :func:`fluxnb.masks.check_mask` (an empty mask or another aspect
    ratio raises) and, when it is another size of the same aspect, resized to ``size``."""
    if mask.data is None:
        return mask  # an http(s) URL: not downloaded here; the server checks it
    fitted = check_mask(mask.data, size)
    return mask if fitted.size == mask.size else _image_input(fitted, mask=True)


class ImageBook:
    """Every image of one sweep, encoded once per object (``encode``), and every mask checked and
    fitted once per image size (``fit``); ``identity``/``label``/``describe`` name a value."""

    def __init__(self) -> None:
        self._encoded: dict[int, ImageInput] = {}
        self._fitted: dict[tuple[str, tuple[int, int] | None], ImageInput | ValidationError] = {}

    def encode(self, name: str, obj: Any) -> ImageInput:
        if id(obj) not in self._encoded:
            self._encoded[id(obj)] = _image_input(obj, mask=name == "mask_url")
        return self._encoded[id(obj)]

    def fit(self, mask: ImageInput, image: ImageInput | None) -> ImageInput:
        """The cell's mask, refused when it repaints nothing and fitted to the cell's image."""
        key = (mask.digest, image.size if image is not None else None)
        if key not in self._fitted:
            try:
                self._fitted[key] = _fitted_mask(mask, key[1])
            except ValidationError as exc:
                self._fitted[key] = exc
        found = self._fitted[key]
        if isinstance(found, ValidationError):
            raise found
        return found

    def identity(self, name: str, value: Any) -> Any:
        """An image field's value as its content digest (when encoded); other values as they are."""
        found = self._encoded.get(id(value)) if name in IMAGE_FIELDS else None
        return found.digest if found is not None else value

    def describe(self, name: str, value: Any) -> Any:
        """An image field's value as its short label (when encoded); other values as they are."""
        found = self._encoded.get(id(value)) if name in IMAGE_FIELDS else None
        return found.label if found is not None else value

    def label(self, name: str, value: Any) -> Any:
        """An axis value as frames and titles show it: images as labels, others JSON-safe."""
        if name in IMAGE_FIELDS:
            return self._encoded[id(value)].label
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        return canonical_json(value)
