"""Which LoRAs ``loras[].path`` may name on this server, and the safetensors check.

A path may name only:

- a ``.safetensors`` file under the server's ``--lora-dir`` (a relative name is resolved inside
  it; ``..``, ``~``, absolute paths outside it and symlinks that lead out are refused: the real
  path is resolved and its containment checked), also as ``file://``;
- an http(s) URL, downloaded by the engine through the server's fetch guard
  (:class:`~fluxnb.server.inputs.FetchPolicy`);
- a hub repo ``owner/repo`` (its ``pytorch_lora_weights.safetensors``) or
  ``owner/repo/[sub/]file.safetensors``, only with ``--allow-hub-loras``.

Every refused path gets the one message of :func:`refusal_message`, whether or not a file of
that name exists, and only files with a valid safetensors header are ever loaded (never a
pickle). The server checks the rule at submit (:func:`lora_errors`) and the engine again.

>>> rules = LoraRules(lora_dir=None)
>>> rules.resolve("https://example.org/style.safetensors", "loras[0].path").kind
'url'
>>> rules.resolve("/etc/shadow", "loras[0].path")
Traceback (most recent call last):
...
fluxnb.server.loras.LoraRefused: loras[0].path: not an allowed LoRA: name a .safetensors ...
"""

from __future__ import annotations

import json
import os
import re
import struct
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ServerConfig

__all__ = ["ERROR_TYPE", "HUB_DEFAULT_WEIGHT", "LORA_HELP", "LoraRefused", "LoraRules",
           "LoraSource", "is_safetensors", "lora_errors", "refusal_message", "rules_for"]

#: What an allowed ``loras[].path`` is, in the words of every refusal.
LORA_HELP = ("name a .safetensors file under the server's --lora-dir, an https URL, or "
             "(with --allow-hub-loras) a hub repo")
#: fal's error ``type`` of a refused path.
ERROR_TYPE = "lora_not_allowed"
#: The file of a hub repo named without one (diffusers' own name for LoRA weights).
HUB_DEFAULT_WEIGHT = "pytorch_lora_weights.safetensors"

_MAX_PATH = 2048
_MAX_HEADER = 64 * 1024 * 1024   # a safetensors header over 64 MiB is no LoRA
_HUB_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SUFFIX = ".safetensors"


def refusal_message(field: str) -> str:
    """The one message of every refused path (it never says whether a file exists).

    >>> refusal_message("loras[1].path")[:38]
    'loras[1].path: not an allowed LoRA: na'
    """
    return f"{field}: not an allowed LoRA: {LORA_HELP}"


class LoraRefused(ValueError):
    """A ``loras[i].path`` this server does not load; ``detail()`` is fal's 422 item."""

    def __init__(self, field: str):
        self.field = field
        self.error_type = ERROR_TYPE
        super().__init__(refusal_message(field))

    def detail(self) -> list[dict[str, Any]]:
        """fal's 422 ``detail`` list for this refusal."""
        return [{"loc": ["body", self.field], "msg": str(self), "type": ERROR_TYPE}]


@dataclass(frozen=True)
class LoraSource:
    """An allowed LoRA: ``kind`` ``file`` (``target`` is the real path), ``url`` or ``hub``
    (``target`` is ``owner/repo``, ``weight_name`` the file inside it)."""

    kind: str
    target: str
    weight_name: str | None = None


@dataclass(frozen=True)
class LoraRules:
    """The server's LoRA rules: ``lora_dir`` (``--lora-dir``) and ``allow_hub``
    (``--allow-hub-loras``)."""

    lora_dir: str | None = None
    allow_hub: bool = False

    def resolve(self, path: Any, field: str) -> LoraSource:
        """The :class:`LoraSource` ``path`` names, or :class:`LoraRefused` naming ``field``."""
        if not isinstance(path, str):
            raise LoraRefused(field)
        text = path.strip()
        if not text or len(text) > _MAX_PATH or any(ord(c) < 32 or c == "\x7f" for c in text):
            raise LoraRefused(field)
        parsed = urllib.parse.urlsplit(text)
        scheme = parsed.scheme.lower()
        if scheme in ("http", "https"):
            if not parsed.hostname:
                raise LoraRefused(field)
            return LoraSource("url", text)
        if scheme == "file":
            if parsed.netloc not in ("", "localhost") or parsed.query or parsed.fragment:
                raise LoraRefused(field)
            return self._local(urllib.request.url2pathname(parsed.path), field)
        if scheme and len(scheme) > 1:
            raise LoraRefused(field)
        try:
            return self._local(text, field)
        except LoraRefused:
            hub = self._hub(text)
            if hub is None:
                raise
            return hub

    def _local(self, text: str, field: str) -> LoraSource:
        if self.lora_dir is None or text.startswith("~") or "\x00" in text:
            raise LoraRefused(field)
        given = Path(text)
        if ".." in given.parts or not given.name.lower().endswith(_SUFFIX):
            raise LoraRefused(field)
        root = os.path.realpath(self.lora_dir)
        candidate = given if given.is_absolute() else Path(root) / given
        real = os.path.realpath(candidate)
        try:
            inside = os.path.commonpath([real, root]) == root and real != root
        except ValueError:   # another drive (Windows)
            inside = False
        if not inside or not real.lower().endswith(_SUFFIX) or not is_safetensors(Path(real)):
            raise LoraRefused(field)
        return LoraSource("file", real)

    def _hub(self, text: str) -> LoraSource | None:
        if not self.allow_hub:
            return None
        parts = text.split("/")
        if len(parts) < 2 or not all(_HUB_PART.match(p) and ".." not in p for p in parts):
            return None
        if len(parts) > 2 and not parts[-1].lower().endswith(_SUFFIX):
            return None
        weight = "/".join(parts[2:]) or HUB_DEFAULT_WEIGHT
        return LoraSource("hub", "/".join(parts[:2]), weight)


def is_safetensors(path: Path) -> bool:
    """True when ``path`` is a regular file with a valid safetensors header: an 8-byte length,
    then a JSON object of tensors whose byte ranges fit in the file (a pickle never passes).

    >>> is_safetensors(Path("/nonexistent.safetensors"))
    False
    """
    try:
        size = path.stat().st_size
        if not path.is_file() or size < 10:
            return False
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if not 2 <= length <= min(_MAX_HEADER, size - 8):
                return False
            raw = f.read(length)
        header = json.loads(raw)
    except (OSError, ValueError, struct.error):
        return False
    if not isinstance(header, dict) or not raw.lstrip().startswith(b"{"):
        return False
    data = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
            return False
        offsets = entry.get("data_offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data):
            return False
    return True


def rules_for(config: ServerConfig) -> LoraRules | None:
    """The LoRA rules a submit is checked against: only engines that load LoRAs (diffusers)
    have any; the others ignore ``loras`` and never open a path."""
    if config.engine != "diffusers":
        return None
    return LoraRules(lora_dir=config.lora_dir, allow_hub=config.allow_hub_loras)


def lora_errors(loras: Any, config: ServerConfig) -> list[dict[str, Any]]:
    """fal's 422 items for every refused ``loras[i].path`` of a validated submit (empty when
    all are allowed, or when the engine ignores LoRAs). Touches the disk: run it in a thread.

    >>> lora_errors([{"path": "/etc/shadow"}], ServerConfig(engine="diffusers"))[0]["loc"]
    ['body', 'loras[0].path']
    """
    rules = rules_for(config)
    if rules is None or not isinstance(loras, list):
        return []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(loras):
        path = item.get("path") if isinstance(item, dict) else None
        try:
            rules.resolve(path, f"loras[{i}].path")
        except LoraRefused as exc:
            errors.extend(exc.detail())
    return errors
