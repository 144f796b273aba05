"""Moderation: a class server's blocklist of words and phrases a prompt may not contain.

``fluxnb serve --blocklist words.txt`` names a UTF-8 file with one word or phrase a line (blank
lines and lines starting with ``#`` are ignored). A prompt matches when it contains an entry as
whole words: case-insensitively, after Unicode NFKC normalisation and case folding (so
full-width or odd-case letters do not slip past), with any whitespace between a phrase's words;
"class" in the list does not match "classic". Words are runs of letters, digits and ``_``; any
other visible character stands alone ("c++" matches "C++ code"). Invisible format characters
(soft hyphens, zero width spaces), combining marks left over after NFKC (a combining grapheme
joiner, variation selectors, a stray accent) and Hangul fillers are dropped before matching.

The refusal is a 422 in fal's shape naming ``prompt``; it never shows the list (nor which entry
matched). :meth:`Blocklist.reload` re-reads the file (SIGHUP does, with the roster).

>>> words = Blocklist.parse("# not allowed\\nclass\\nred  fox\\n")
>>> words.matches("A CLASS photo"), words.matches("a classic photo")
(True, False)
>>> words.matches("a Ｒｅｄ\\n fox"), words.matches("a redfox")
(True, False)
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["MODERATED_MESSAGE", "Blocklist", "BlocklistError", "moderation_error"]

#: What a refused prompt's 422 says (never the list itself).
MODERATED_MESSAGE = ("the prompt has a word or phrase this class server does not allow; reword "
                     "the prompt and submit again (ask your teacher if you think this is a mistake)")
#: Most entries and characters per entry a blocklist file may hold.
MAX_ENTRIES = 50_000
MAX_ENTRY_CHARS = 200


class BlocklistError(ValueError):
    """A blocklist file that cannot be used; the message names the file (and line)."""


#: Dropped before matching: format characters (Cf: soft hyphen, zero width space) and the
#: combining marks NFKC leaves apart (Mn: a combining grapheme joiner, variation selectors or a
#: stray accent inside a word would otherwise split it), and the invisible Hangul fillers.
_DROPPED = ("Cf", "Mn")
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")


def normalise(text: str) -> str:
    """``text`` as it is matched: NFKC, case-folded, without format characters (category Cf),
    combining marks NFKC did not compose (Mn) and Hangul fillers.

    >>> normalise("Ｃｌａ\\u00adSS")
    'class'
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    if not folded.isascii():
        folded = "".join(c for c in folded
                         if unicodedata.category(c) not in _DROPPED and c not in _FILLERS)
        folded = unicodedata.normalize("NFKC", folded)
    return folded


_TOKEN = re.compile(r"\w+|[^\w\s]")


def _tokens(text: str) -> tuple[str, ...]:
    """Words (runs of letters, digits and ``_``) and single other non-space characters: whole
    words match as whole tokens, and whitespace between tokens is not kept."""
    return tuple(_TOKEN.findall(normalise(text)))


class Blocklist:
    """The words and phrases a prompt may not contain; :meth:`matches` is thread-safe, and
    :meth:`reload` swaps in a re-read file at once (a bad file keeps the old list).

    >>> Blocklist(["bad word"]).matches("a BAD\\tWORD here")
    True
    >>> len(Blocklist(["a", "a", " b "]))
    2
    """

    def __init__(self, entries: Iterable[str] = (), path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._entries: frozenset[tuple[str, ...]] = frozenset()
        self._lengths: tuple[int, ...] = ()
        self._set(entries)

    def _set(self, entries: Iterable[str]) -> None:
        normal = frozenset(t for t in map(_tokens, entries) if t)
        lengths = tuple(sorted({len(t) for t in normal}))
        with self._lock:  # one swap: a reader sees the old list or the new one, never half
            self._entries, self._lengths = normal, lengths

    @classmethod
    def parse(cls, text: str, source: str = "blocklist") -> Blocklist:
        """The blocklist of a file's text; a :class:`BlocklistError` naming ``source:line`` for
        an entry over :data:`MAX_ENTRY_CHARS` characters or more than :data:`MAX_ENTRIES`."""
        return cls(_entries(text, source))

    @classmethod
    def load(cls, path: str | Path) -> Blocklist:
        """The blocklist in file ``path`` (kept for :meth:`reload`)."""
        return cls(_read(Path(path)), path)

    def reload(self) -> int:
        """Re-read the file; returns how many entries it holds. A :class:`BlocklistError` (the
        list in use stays) when it cannot be read or there is no file."""
        if self.path is None:
            raise BlocklistError("this blocklist was not loaded from a file")
        entries = _read(self.path)
        self._set(entries)
        return len(self)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:  # the words themselves stay out of logs
        return f"Blocklist({len(self)} entries" + (f", {str(self.path)!r})" if self.path else ")")

    def matches(self, prompt: str) -> bool:
        """Whether ``prompt`` contains an entry as whole words (time linear in the prompt's
        length, whatever the list's size)."""
        with self._lock:
            entries, lengths = self._entries, self._lengths
        if not entries:
            return False
        tokens = _tokens(prompt)
        return any(tokens[i:i + n] in entries for i in range(len(tokens)) for n in lengths)


def moderation_error() -> dict[str, Any]:
    """The error item of a refused prompt (a 422's ``detail`` holds it)."""
    return {"loc": ["body", "prompt"], "msg": MODERATED_MESSAGE, "type": "prompt_not_allowed"}


def _read(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BlocklistError(f"{path}: cannot read the blocklist ({type(exc).__name__}: {exc}); "
                             "give a UTF-8 text file, one word or phrase a line") from None
    return _entries(text, str(path))


def _entries(text: str, source: str) -> list[str]:
    entries: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if len(entry) > MAX_ENTRY_CHARS:
            raise BlocklistError(f"{source}:{number}: an entry of {len(entry)} characters; "
                                 f"at most {MAX_ENTRY_CHARS} (one word or phrase a line)")
        entries.append(entry)
        if len(entries) > MAX_ENTRIES:
            raise BlocklistError(f"{source}:{number}: more than {MAX_ENTRIES} entries; "
                                 "shorten the list")
    return entries
