"""Who is asking: the class roster (one token per person), roles, and the one-key server.

A roster is a CSV file with the header ``name,role,token`` (role ``student`` or ``teacher``) and
optional columns ``max_queued``, ``budget_mp`` and ``budget_usd`` (per-person limits, kept on the
:class:`Person`; enforcing them is the scheduler's business). Requests carry a token as
``Authorization: Key <token>``. Imports only the standard library: the CLI writes rosters with it.

>>> people = new_roster(2, teachers=1)
>>> [(p.name, p.role) for p in people]
[('student01', 'student'), ('student02', 'student'), ('teacher01', 'teacher')]
>>> roster = parse_roster(roster_csv(people))
>>> auth = Auth(roster=roster)
>>> auth.identify(f"Key {people[0].token}").name, auth.identify("Key nope")
('student01', None)
>>> auth.identify(f"Key {people[2].token}").sees("student02")
True
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ANYONE", "Auth", "Person", "RosterError", "load_roster", "new_roster", "parse_roster",
           "roster_csv", "write_roster"]

STUDENT, TEACHER = "student", "teacher"
_COLUMNS = ("name", "role", "token")
_LIMITS = ("max_queued", "budget_mp", "budget_usd")
_MIN_TOKEN = 16


class RosterError(ValueError):
    """A roster that cannot be used; the message names the file line at fault."""


@dataclass(frozen=True)
class Person:
    """One roster entry (the token itself is never in the repr)."""

    name: str | None
    role: str
    token: str = ""
    max_queued: int | None = None
    budget_mp: float | None = None
    budget_usd: float | None = None

    def __repr__(self) -> str:
        return f"Person({self.name!r}, {self.role!r})"

    @property
    def is_teacher(self) -> bool:
        return self.role == TEACHER

    def sees(self, owner: str | None) -> bool:
        """Whether this person may see a job of ``owner``: teachers see all, a student their own."""
        return self.is_teacher or owner == self.name


#: Whoever asks a server without key or roster (the laptop server): one person, who sees all.
ANYONE = Person(None, TEACHER)
#: Whoever holds the one ``--key`` of a keyed server.
_KEY_HOLDER = Person(None, TEACHER)


def new_roster(students: int, teachers: int = 1) -> list[Person]:
    """``students`` students then ``teachers`` teachers, named student01.. and teacher01..,
    each with a fresh random token (``secrets.token_urlsafe(32)``)."""
    if students < 0 or teachers < 0 or students + teachers < 1:
        raise ValueError("a roster needs at least one person")
    width = max(2, len(str(max(students, teachers))))
    return ([Person(f"student{i:0{width}d}", STUDENT, secrets.token_urlsafe(32))
             for i in range(1, students + 1)]
            + [Person(f"teacher{i:0{width}d}", TEACHER, secrets.token_urlsafe(32))
               for i in range(1, teachers + 1)])


def roster_csv(people: Iterable[Person]) -> str:
    """The CSV text of a roster (``name,role,token``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for p in people:
        writer.writerow((p.name, p.role, p.token))
    return out.getvalue()


def write_roster(path: str | Path, people: Iterable[Person], *, force: bool = False) -> Path:
    """Write a roster file readable by its owner only (mode 0600); an existing file is kept
    (FileExistsError) unless ``force``."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that was there
        f.write(roster_csv(people))
    return path


def _limit(raw: str, column: str, where: str) -> int | float | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = int(raw) if column == "max_queued" else float(raw)
    except ValueError:
        raise RosterError(f"{where}: {column} must be a "
                          f"{'whole number' if column == 'max_queued' else 'number'}, "
                          f"not {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise RosterError(f"{where}: {column} must be >= 0, not {raw!r}")
    return value


def parse_roster(text: str, source: str = "roster") -> list[Person]:
    """The people of a roster's CSV text; a :class:`RosterError` naming ``source:line`` for a
    missing column, a bad role or limit, a short, repeated or empty token, or a repeated name."""
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None:
        raise RosterError(f"{source}: empty file (expected the header {','.join(_COLUMNS)})")
    columns = [c.strip().lower() for c in header]
    missing = [c for c in _COLUMNS if c not in columns]
    if missing:
        raise RosterError(f"{source}:1: the header lacks {', '.join(missing)} "
                          f"(expected {','.join(_COLUMNS)}[,{','.join(_LIMITS)}])")
    unknown = [c for c in columns if c not in _COLUMNS + _LIMITS]
    if unknown:
        raise RosterError(f"{source}:1: unknown column {unknown[0]!r}")
    people: list[Person] = []
    names: set[str] = set()
    tokens: set[str] = set()
    for row in rows:
        where = f"{source}:{rows.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(columns):
            raise RosterError(f"{where}: {len(row)} fields, the header has {len(columns)}")
        cells = dict(zip(columns, [c.strip() for c in row] + [""] * (len(columns) - len(row)),
                         strict=True))
        name, role, token = cells["name"], cells["role"].lower(), cells["token"]
        if not name:
            raise RosterError(f"{where}: empty name")
        if role not in (STUDENT, TEACHER):
            raise RosterError(f"{where}: role must be student or teacher, not {cells['role']!r}")
        if len(token) < _MIN_TOKEN or any(c.isspace() for c in token):
            raise RosterError(f"{where}: {name}'s token must be at least {_MIN_TOKEN} "
                              "characters without spaces (fluxnb class new makes good ones)")
        if name in names:
            raise RosterError(f"{where}: the name {name!r} is listed twice")
        if token in tokens:
            raise RosterError(f"{where}: {name}'s token is another person's too")
        names.add(name)
        tokens.add(token)
        limits = {c: _limit(cells.get(c, ""), c, where) for c in _LIMITS}
        people.append(Person(name, role, token, **limits))  # type: ignore[arg-type]
    if not people:
        raise RosterError(f"{source}: nobody is listed")
    return people


def load_roster(path: str | Path) -> list[Person]:
    """:func:`parse_roster` of a file (its lines named in errors)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RosterError(f"{path}: cannot read the roster ({exc})") from None
    return parse_roster(text, str(path))


def _digest(token: str) -> bytes:
    # looked up by hash, so a lookup's timing says nothing about the tokens themselves
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Auth:
    """Who a request's ``Authorization`` header names: with a roster, its person; with one key,
    the key holder (a teacher); with neither, :data:`ANYONE`. :meth:`reload` re-reads the roster
    file (the old roster stays when the new one is bad). Thread-safe."""

    def __init__(self, *, key: str | None = None, roster: Iterable[Person] | None = None,
                 roster_path: str | Path | None = None):
        if roster_path is not None and roster is None:
            roster = load_roster(roster_path)
        if key is not None and roster is not None:
            raise ValueError("a server takes a key or a roster, not both")
        self.key = key
        self.roster_path = Path(roster_path) if roster_path is not None else None
        self._lock = threading.Lock()
        self._people: Mapping[bytes, Person] | None = None
        if roster is not None:
            self._people = self._index(roster)

    @staticmethod
    def _index(people: Iterable[Person]) -> dict[bytes, Person]:
        return {_digest(p.token): p for p in people}

    @property
    def has_roster(self) -> bool:
        return self._people is not None

    @property
    def open(self) -> bool:
        """True when anyone may ask (no key, no roster)."""
        return self.key is None and self._people is None

    @property
    def people(self) -> list[Person]:
        with self._lock:
            return list(self._people.values()) if self._people is not None else []

    def reload(self) -> int:
        """Re-read the roster file; returns how many people it lists. A :class:`RosterError`
        (the roster in use stays) when the file is bad or there is no roster file."""
        if self.roster_path is None:
            raise RosterError("this server was not started with a roster file")
        people = self._index(load_roster(self.roster_path))
        with self._lock:
            self._people = people
        return len(people)

    def identify(self, authorization: str) -> Person | None:
        """The person an ``Authorization: Key <token>`` header names, or None (no or unknown
        token). The key holder when the server has one key (checked by the caller)."""
        if self._people is None:
            return _KEY_HOLDER if self.key is not None else ANYONE
        scheme, _, given = authorization.strip().partition(" ")
        if scheme.lower() != "key" or not given.strip():
            return None
        with self._lock:
            return self._people.get(_digest(given.strip()))
