"""Data URIs and image-type sniffing: pure helpers shared by the client and the server.

>>> uri = encode_data_uri(b"\\x89PNG\\r\\n\\x1a\\nrest", "image/png")
>>> uri[:22]
'data:image/png;base64,'
>>> decode_data_uri(uri)
('image/png', b'\\x89PNG\\r\\n\\x1a\\nrest')
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse

__all__ = ["decode_data_uri", "encode_data_uri", "sniff_mime"]

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


def sniff_mime(data: bytes) -> str | None:
    """The image MIME type the first bytes announce (png, jpeg, gif, webp, avif, bmp), or None."""
    for magic, mime in _SIGNATURES:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "image/avif"
    return None


def encode_data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,<data>``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """Split a data URI into (mime, bytes); raises ValueError naming what is wrong."""
    if not uri.startswith("data:"):
        raise ValueError("not a data URI (it must start with 'data:')")
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise ValueError("malformed data URI: no ',' after the media type")
    parts = header.split(";")
    mime = parts[0].strip().lower() or "text/plain"
    if "base64" in (p.strip().lower() for p in parts[1:]):
        try:
            data = base64.b64decode(payload.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"malformed data URI: invalid base64 ({exc})") from None
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    return mime, data
