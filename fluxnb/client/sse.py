"""A pure, incremental parser for server-sent events (the ``text/event-stream`` format).

Feed it text as it arrives, in chunks of any size; it returns the events completed so far.
Comment lines (``: keep-alive``) are skipped, ``data:`` lines of one event are joined with
``\\n``, and an event is dispatched at the blank line that ends it (the WHATWG rules).

>>> parser = SSEParser()
>>> parser.feed('data: {"status": "IN_')
[]
>>> parser.feed('QUEUE"}\\n\\n: keep-alive\\n\\n')
[SSEEvent(data='{"status": "IN_QUEUE"}', event='message', id=None, retry=None)]
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEEvent", "SSEParser"]


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEParser:
    """Incremental SSE parser; no I/O. Use one instance per stream."""

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self._has_fields = False

    def feed(self, chunk: str) -> list[SSEEvent]:
        """Add text; return the events it completed (possibly none)."""
        self._buffer += chunk
        events: list[SSEEvent] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            line, self._buffer = self._buffer[: cut[0]], self._buffer[cut[1]:]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_fields = True
        elif name == "event":
            self._event = value
            self._has_fields = True
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            self._has_fields = False
            return None
        event = SSEEvent("\n".join(self._data), self._event or "message", self._id, self._retry)
        self._data = []
        self._event = ""
        self._has_fields = False
        return event


def _line_end(text: str) -> tuple[int, int] | None:
    """(end of line, start of next line) for the first complete line, or None.

    A lone ``\\r`` at the very end may be the first half of ``\\r\\n``, so it waits for more text.
    """
    lf, cr = text.find("\n"), text.find("\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (lf, lf + 1)
    if cr + 1 == len(text):
        return None
    return (cr, cr + 2) if text[cr + 1] == "\n" else (cr, cr + 1)
