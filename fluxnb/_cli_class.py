"""``fluxnb class new``: write a class roster (one random token per student and teacher).

::

    fluxnb class new --students 24 --teachers 1 --out roster.csv
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["add_class_parser", "add_serve_auth_options", "run_class", "serve_auth"]

_EXAMPLES = """\
examples:
  fluxnb class new --students 24 --out roster.csv
  fluxnb serve --roster roster.csv --host 0.0.0.0 --certfile cert.pem --keyfile key.pem

The roster is a CSV file (name,role,token), readable by you only (mode 0600). Hand each
student their own token; they pass it as FLUXNB_KEY (fluxnb) or FAL_KEY (fal-client).
Optional columns max_queued, budget_mp and budget_usd set per-person limits."""


def add_class_parser(sub: Any) -> None:
    """Add ``class new`` to the ``fluxnb`` command's subparsers."""
    group = sub.add_parser("class", help="make a class roster (personal tokens) for fluxnb serve",
                           description="Class rosters for fluxnb serve --roster.",
                           epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = group.add_subparsers(dest="class_command", required=True)
    new = actions.add_parser("new", help="write a roster with fresh tokens",
                             epilog=_EXAMPLES,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    new.add_argument("--students", type=int, required=True, help="how many students")
    new.add_argument("--teachers", type=int, default=1, help="how many teachers (default 1)")
    new.add_argument("--out", required=True, help="the roster file to write (CSV)")
    new.add_argument("--force", action="store_true", help="overwrite an existing file")


def add_serve_auth_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--key", default=None,
                       help="require 'Authorization: Key <key>' (default: $FLUXNB_SERVER_KEY, else "
                            "open); visible to other local users, prefer --key-file")
    serve.add_argument("--key-file", default=None, metavar="FILE",
                       help="read the server's key from FILE (stripped): keeps it out of the "
                            "process list")
    serve.add_argument("--roster", default=None, metavar="CSV",
                       help="a class roster (fluxnb class new): each token is a person, who sees "
                            "only their own jobs; reload it with SIGHUP")


def _server_key(value: str | None, source: str,
                usage_error: Callable[[str], NoReturn]) -> str | None:
    """The server's own key, stripped like a client's key (a key read with ``$(cat key.txt)``
    keeps its newline), or a usage error naming its source (never the key)."""
    from ._http import clean_key
    from .errors import CredentialsError

    if not value:
        return None
    try:
        return clean_key(value, source)
    except CredentialsError as exc:
        usage_error(f"fluxnb serve: {exc}")


def serve_auth(args: argparse.Namespace,
               usage_error: Callable[[str], NoReturn]) -> tuple[str | None, str | None]:
    """``key=`` and ``roster=`` of the server config from ``--key``/``--key-file``/``--roster``."""
    from .server.auth import RosterError, load_roster

    if args.key is not None and args.key_file is not None:
        usage_error("fluxnb serve: give --key or --key-file, not both")
    if args.key is not None:
        print("fluxnb serve: warning: --key is visible to other local users in the process list; "
              "use --key-file FILE or $FLUXNB_SERVER_KEY", file=sys.stderr)
    flag, source = args.key, "--key"
    if flag is None and args.key_file is None:
        flag, source = os.environ.get("FLUXNB_SERVER_KEY"), "FLUXNB_SERVER_KEY"
    if args.key_file is not None:
        source = "--key-file"
        try:
            flag = Path(args.key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            usage_error(f"fluxnb serve: cannot read --key-file {args.key_file}: {exc}")
        if not flag:
            usage_error(f"fluxnb serve: --key-file {args.key_file} is empty")
    key = _server_key(flag, source, usage_error)
    if args.roster is not None:
        if key is not None:
            usage_error("fluxnb serve: --roster gives every person a token; drop --key/--key-file "
                        "(and $FLUXNB_SERVER_KEY)")
        try:
            load_roster(args.roster)
        except RosterError as exc:
            usage_error(f"fluxnb serve: --roster: {exc}")
    return key, args.roster


def run_class(args: argparse.Namespace) -> int:
    from .server.auth import new_roster, write_roster

    if args.students < 0 or args.teachers < 0 or args.students + args.teachers < 1:
        print("fluxnb class new: --students and --teachers must be >= 0, and not both 0",
              file=sys.stderr)
        return 2
    people = new_roster(args.students, args.teachers)
    try:
        path = write_roster(Path(args.out), people, force=args.force)
    except FileExistsError:
        print(f"fluxnb class new: {args.out} exists; pass --force to replace it (its tokens "
              "stop working)", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fluxnb class new: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    students = sum(not p.is_teacher for p in people)
    teachers = len(people) - students
    print(f"wrote {path}: {_count(students, 'student')}, {_count(teachers, 'teacher')} "
          f"(mode 0600; start the server with fluxnb serve --roster {path})")
    return 0


def _count(n: int, noun: str) -> str:
    """``1 teacher``, ``24 students``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
