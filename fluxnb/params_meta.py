"""Parameters inside saved images: a job's inputs written into PNG / JPEG bytes, and read back.

What is written (:func:`build_metadata`): the prompt, every schema parameter, the seed, the LoRAs
with their scales, the engine, the backend (a host, ``fal.ai`` or ``embedded``) and fluxnb's
version. Never a key or token, never the input images: only the sha256 of their bytes (an http(s)
input is named by its URL without userinfo, query or fragment, where tokens travel).

- PNG: an iTXt chunk ``fluxnb`` (the JSON) and an A1111-style ``parameters`` text chunk, inserted
  before the first IDAT: the pixel data is not touched.
- JPEG: an EXIF APP1 segment whose ``UserComment`` is the JSON, plus a COM segment with the A1111
  text, inserted after SOI/APP0: the entropy-coded data is not re-encoded.
- Other formats (WebP, ...) are returned unchanged.

>>> import io
>>> from PIL import Image
>>> buf = io.BytesIO(); Image.new("RGB", (4, 4)).save(buf, "PNG")
>>> meta = build_metadata({"prompt": "a fox", "seed": 7, "steps": 20}, engine="preview",
...                       backend="127.0.0.1:8765")
>>> data = embed_metadata(buf.getvalue(), meta)
>>> params = read_params(data); params["num_inference_steps"], params["seed"]
(20, 7)
>>> read_params(data, full=True)["engine"]
'preview'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import struct
import urllib.parse
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from ._version import __version__
from .errors import FluxnbError, ValidationError
from .schema import INPUT_FIELDS, resolve_aliases, validate_input

__all__ = ["METADATA_KEY", "MetadataError", "a1111_text", "build_metadata", "embed_metadata",
           "input_digest", "read_params", "run_inputs", "safe_url"]

#: The PNG text key / JSON marker of fluxnb's record.
METADATA_KEY = "fluxnb"
_IMAGE_FIELDS = ("image_url", "mask_url")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286
_PLACEHOLDER = "data:image/png;base64,"


class MetadataError(FluxnbError, ValueError):
    """An image without fluxnb parameters, or with ones that cannot be read."""


def safe_url(url: str) -> str:
    """An http(s) URL without userinfo, query and fragment (where credentials travel).

    >>> safe_url("https://user:pw@cdn.x/a.png?token=s3cret#f")
    'https://cdn.x/a.png'
    """
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def input_digest(value: Any) -> dict[str, Any]:
    """How an input image is named in the record: ``{"sha256": ...}`` of a data URI's (or raw)
    bytes, ``{"url": ...}`` (via :func:`safe_url`) for an http(s) URL, ``{}`` when unknown."""
    if isinstance(value, (bytes, bytearray)):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, str) and value.startswith("data:"):
        header, _, payload = value.partition(",")
        try:
            data = base64.b64decode(payload) if header.endswith(";base64") else \
                urllib.parse.unquote_to_bytes(payload)
        except (binascii.Error, ValueError):
            return {}
        return {"sha256": hashlib.sha256(data).hexdigest()}
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return {"url": safe_url(value)}
    return {}


def _clean_lora(item: Any) -> Any:
    if isinstance(item, Mapping) and isinstance(item.get("path"), str) and \
            item["path"].startswith(("http://", "https://")):
        return {**item, "path": safe_url(item["path"])}
    return dict(item) if isinstance(item, Mapping) else item


def run_inputs(params: Mapping[str, Any]) -> dict[str, Any]:
    """The schema fields of ``params`` that ``client.run`` takes besides the images (aliases
    resolved, ``None`` dropped, unknown keys dropped, LoRA URLs through :func:`safe_url`).

    >>> run_inputs({"steps": 20, "image_url": "data:,", "key": "k", "seed": None})
    {'num_inference_steps': 20}
    """
    out: dict[str, Any] = {}
    for name, value in resolve_aliases(params).items():
        if name in INPUT_FIELDS and name not in _IMAGE_FIELDS and value is not None:
            out[name] = [_clean_lora(x) for x in value] if name == "loras" and \
                isinstance(value, (list, tuple)) else value
    return out


def build_metadata(params: Mapping[str, Any], *, seed: int | None = None,
                   engine: str | None = None, backend: str | None = None,
                   inputs: Mapping[str, Mapping[str, Any]] | None = None,
                   defaults: bool = True) -> dict[str, Any]:
    """The record written into an image. ``params``: the job's inputs (images allowed: they
    become digests unless ``inputs`` names them already); ``seed``: the seed used (overrides);
    ``defaults``: fill in the schema's default of every parameter not given (what the job ran
    with; False when the parameters are not known, only the prompt and seed)."""
    run = run_inputs(params)
    for name, spec in INPUT_FIELDS.items() if defaults else ():
        if name not in run and name not in _IMAGE_FIELDS and spec.default is not None:
            run[name] = list(spec.default) if isinstance(spec.default, tuple) else spec.default
    if seed is not None:
        run["seed"] = int(seed)
    named = dict(inputs) if inputs is not None else {
        name: input_digest(params[name]) for name in _IMAGE_FIELDS if name in params}
    return {METADATA_KEY: __version__, "params": run, "inputs": named,
            "engine": engine, "backend": backend}


def a1111_text(meta: Mapping[str, Any]) -> str:
    """AUTOMATIC1111's ``parameters`` text with FLUX's fields.

    >>> text = a1111_text({"params": {"prompt": "a fox", "seed": 7, "num_inference_steps": 20},
    ...                    "engine": "preview"})
    >>> text.splitlines()[0], text.splitlines()[1][:49]
    ('a fox', 'Steps: 20, Sampler: FLUX, CFG scale: 3.5, Seed: 7')
    """
    p = dict(meta.get("params") or {})
    fields = [("Steps", p.get("num_inference_steps", INPUT_FIELDS["num_inference_steps"].default)),
              ("Sampler", "FLUX"),
              ("CFG scale", p.get("guidance_scale", INPUT_FIELDS["guidance_scale"].default)),
              ("Seed", p.get("seed")),
              ("Size", _size_text(p.get("image_size"))),
              ("Denoising strength", p.get("strength", INPUT_FIELDS["strength"].default)),
              ("Model", meta.get("engine"))]
    loras = [x for x in p.get("loras") or [] if isinstance(x, Mapping)]
    if loras:
        fields.append(("Lora hashes", '"' + ", ".join(
            f"{Path(str(x.get('path', ''))).stem}: {x.get('scale', 1.0)}" for x in loras) + '"'))
    fields.append(("Version", f"fluxnb {meta.get(METADATA_KEY, __version__)}"))
    line = ", ".join(f"{k}: {v}" for k, v in fields if v is not None)
    return f"{p.get('prompt', '')}\n{line}"


def _size_text(size: Any) -> str | None:
    if isinstance(size, Mapping):
        return f"{size.get('width')}x{size.get('height')}"
    return size if isinstance(size, str) else None


# -- writing ---------------------------------------------------------------------------------


def embed_metadata(data: bytes, meta: Mapping[str, Any]) -> bytes:
    """``data`` (PNG or JPEG bytes) with ``meta`` inside, pixels untouched; a record already
    there is replaced. Other formats come back unchanged."""
    text = json.dumps(meta, ensure_ascii=True, sort_keys=True, default=str)
    if data.startswith(_PNG_SIGNATURE):
        return _png_embed(data, text, a1111_text(meta))
    if data.startswith(b"\xff\xd8"):
        return _jpeg_embed(data, text, a1111_text(meta))
    return data


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_text(key: str, text: str) -> bytes:
    try:
        return _png_chunk(b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        return _png_chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8"))


def _png_embed(data: bytes, text: str, parameters: str) -> bytes:
    out, pos, inserted = [data[:8]], 8, False
    ours = (METADATA_KEY.encode(), b"parameters")
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I", data[pos:pos + 4])[0], data[pos + 4:pos + 8]
        end = pos + 12 + length
        if kind in (b"tEXt", b"iTXt", b"zTXt") and data[pos + 8:end - 4].split(b"\0", 1)[0] in ours:
            pos = end
            continue
        if kind in (b"IDAT", b"IEND") and not inserted:
            out.append(_png_chunk(b"iTXt", METADATA_KEY.encode() + b"\0\0\0\0\0" + text.encode()))
            out.append(_png_text("parameters", parameters))
            inserted = True
        out.append(data[pos:end])
        pos = end
    out.append(data[pos:])
    return b"".join(out)


def _exif_user_comment(text: str) -> bytes:
    """A little-endian TIFF: IFD0 -> Exif IFD -> UserComment (ASCII code, the JSON)."""
    comment = b"ASCII\0\0\0" + text.encode("ascii")
    ifd0 = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 1) + \
        struct.pack("<HHII", _EXIF_IFD, 4, 1, 26) + struct.pack("<I", 0)
    exif_ifd = struct.pack("<H", 1) + struct.pack("<HHII", _USER_COMMENT, 7, len(comment), 44) + \
        struct.pack("<I", 0)
    return ifd0 + exif_ifd + comment


def _jpeg_embed(data: bytes, text: str, parameters: str) -> bytes:
    exif = b"Exif\0\0" + _exif_user_comment(text)
    if len(exif) + 2 > 0xFFFF:
        raise MetadataError(f"the parameters are too long for a JPEG EXIF segment "
                            f"({len(exif)} bytes, at most 65533): shorten the prompt")
    segments = [b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif]
    com = parameters.encode("utf-8")[:0xFFFD - 2]
    segments.append(b"\xff\xfe" + struct.pack(">H", len(com) + 2) + com)
    pos, head, rest = 2, [data[:2]], list[bytes]()
    marker_json = b'"' + METADATA_KEY.encode() + b'": '
    while pos + 4 <= len(data) and data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xFE:
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        segment = data[pos:pos + 2 + length]
        ours = (data[pos + 1] == 0xE1 and segment[4:10] == b"Exif\0\0" and marker_json in segment) \
            or (data[pos + 1] == 0xFE and b"Version: fluxnb" in segment)
        if not ours:
            (head if data[pos + 1] == 0xE0 and not rest else rest).append(segment)
        pos += 2 + length
    return b"".join([*head, *segments, *rest, data[pos:]])


# -- reading ---------------------------------------------------------------------------------


def _open(source: Any) -> tuple[Image.Image, str]:
    if isinstance(source, Image.Image):
        return source, getattr(source, "filename", "") or "the image"
    if isinstance(source, (bytes, bytearray)):
        where, stream = "the image bytes", io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        where, stream = os.fspath(source), None
    else:
        raise MetadataError(f"read_params takes a path, bytes or a PIL image, "
                            f"not {type(source).__name__}")
    try:
        return Image.open(stream if stream is not None else where), where
    except (OSError, ValueError) as exc:
        raise MetadataError(f"{where}: not an image fluxnb can read ({exc})") from None


def _record_text(img: Image.Image) -> str | None:
    text = img.info.get(METADATA_KEY)
    if text is None and img.format == "PNG":
        img.load()  # text chunks after the pixel data are read only now
        text = img.info.get(METADATA_KEY)
    if text is None and "exif" in img.info:
        comment = img.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
        if isinstance(comment, bytes):
            comment = comment[8:].decode("utf-8", "replace") if comment[:8] in (
                b"ASCII\0\0\0", b"UNICODE\0") else comment.decode("utf-8", "replace")
        text = comment if isinstance(comment, str) and METADATA_KEY in comment else None
    return None if text is None else str(text)


def read_params(source: Any, *, full: bool = False) -> dict[str, Any]:
    """The inputs saved in an output image (path, bytes or PIL image), as keyword arguments for
    ``client.run(**params, image_url=..., mask_url=...)``: schema-valid, images left out.

    ``full=True`` returns the whole record instead: ``params``, ``inputs`` (the sha256 of each
    input image, or its URL), ``engine``, ``backend`` and the fluxnb version (key ``fluxnb``).
    An image without fluxnb parameters raises :class:`MetadataError` naming the file.

    >>> read_params(b"not an image")
    Traceback (most recent call last):
    ...
    fluxnb.params_meta.MetadataError: the image bytes: not an image fluxnb can read (cannot identify image file <_io.BytesIO object at ...>)
    """  # noqa: E501 - a doctest's traceback line
    img, where = _open(source)
    try:
        text = _record_text(img)
        kind = img.format or "image"
    finally:
        if img is not source:  # opened here: closed here
            img.close()
    if text is None:
        raise MetadataError(f"{where}: no fluxnb parameters in this {kind} "
                            "(only images fluxnb saved carry them: result.save(), fluxnb run, "
                            "the panel, sweeps and the server's files)")
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise MetadataError(f"{where}: the fluxnb parameters are not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("params"), dict):
        raise MetadataError(f"{where}: the fluxnb record has no 'params' object")
    if full:
        return meta
    params = {k: v for k, v in meta["params"].items() if k in INPUT_FIELDS}
    try:
        checked = validate_input({**params, "image_url": _PLACEHOLDER, "mask_url": _PLACEHOLDER})
    except ValidationError as exc:
        raise MetadataError(f"{where}: the saved parameters are not valid here: {exc}") from None
    return {k: v for k, v in checked.items() if k not in _IMAGE_FIELDS}
