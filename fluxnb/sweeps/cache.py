"""The result cache: finished jobs keyed by their full inputs (images by content) and backend.

An entry holds the rows of one job (without folder paths) and its output images, stored once by
their sha256, so an identical cell in any later sweep, in any folder, is answered from disk with no
request. The key never includes an API key: only the inputs and the backend's URL and app id.

>>> import tempfile
>>> cache = ResultCache(tempfile.mkdtemp())
>>> key = cache_key("a" * 64, backend="http://127.0.0.1:8000/fal-ai/flux-lora/inpainting")
>>> cache.get(key) is None
True
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CACHE_ENV", "ResultCache", "cache_key", "default_cache_dir", "place"]

#: Environment variable that moves the cache (default ``~/.cache/fluxnb/sweeps``).
CACHE_ENV = "FLUXNB_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$FLUXNB_CACHE_DIR``, else ``$XDG_CACHE_HOME/fluxnb/sweeps``, else ``~/.cache/fluxnb/sweeps``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fluxnb" / "sweeps"


def cache_key(cell_key: str, *, backend: str) -> str:
    """The cache key of a cell (the sha256 of its inputs, see ``Cell.key``) on a backend."""
    return hashlib.sha256(f"{backend}\n{cell_key}".encode()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def place(source: Path, target: Path) -> None:
    """Put ``source``'s bytes at ``target``: a hard link when possible, else a copy."""
    try:
        os.link(source, target)
        return
    except FileExistsError:
        target.unlink()
    except FileNotFoundError:
        if not source.exists():
            raise
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # no hard links here (another file system, or not supported)
        shutil.copyfile(source, target)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class ResultCache:
    """Entries under ``root/entries``, image bytes under ``root/objects`` (content-addressed)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser()

    def _entry(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / f"{key}.json"

    def object_path(self, digest: str) -> Path:
        """Where the image with this sha256 is stored."""
        return self.root / "objects" / digest[:2] / digest

    def get(self, key: str) -> list[dict[str, Any]] | None:
        """The rows stored for ``key`` (each with ``sha256`` naming its image object), or None when
        absent or incomplete."""
        try:
            entry = json.loads(self._entry(key).read_text())
        except (OSError, ValueError):
            return None
        rows = entry.get("rows") if isinstance(entry, Mapping) else None
        if not isinstance(rows, list) or not rows:
            return None
        for row in rows:
            digest = row.get("sha256")
            if not isinstance(digest, str) or not self.object_path(digest).is_file():
                return None
        return [dict(r) for r in rows]

    def put(self, key: str, rows: Sequence[Mapping[str, Any]], files: Mapping[str, Path]) -> None:
        """Store a finished job: its rows and the image file of each (``files``: sha256 -> path)."""
        for digest, path in files.items():
            target = self.object_path(digest)
            if not target.exists():  # another job (or thread) may store the same bytes now
                tmp = target.with_name(f".tmp-{uuid.uuid4().hex}")
                place(Path(path), tmp)
                os.replace(tmp, target)
        _write_atomic(self._entry(key), json.dumps({"rows": list(rows)}, default=str).encode())

    def clear(self) -> None:
        """Delete every entry and object."""
        shutil.rmtree(self.root, ignore_errors=True)
