"""``fluxnb class new``: write a class roster (one random token per student and teacher).

::

    fluxnb class new --students 24 --teachers 1 --out roster.csv
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["add_class_parser", "add_serve_auth_options", "add_serve_class_options", "class_config",
           "run_class", "serve_auth"]

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


def add_serve_class_options(serve: argparse.ArgumentParser) -> None:
    """The class server's flags of ``fluxnb serve`` (quotas, state, gateway, limits)."""
    group = serve.add_argument_group("class server")
    group.add_argument("--max-queued", type=int, default=None, metavar="N",
                       help="jobs one person may have waiting (default 4 with --roster)")
    group.add_argument("--max-queue", type=int, default=None, metavar="N",
                       help="jobs waiting on the whole server (default 2000); more answer 429")
    group.add_argument("--budget-mp", type=float, default=None, metavar="X",
                       help="megapixels x images one person may ask for per session")
    group.add_argument("--budget-usd", type=float, default=None, metavar="X",
                       help="dollars one person may spend through --engine fal")
    group.add_argument("--blocklist", default=None, metavar="FILE",
                       help="words or phrases (one a line) a prompt may not contain")
    group.add_argument("--state-dir", default=None, metavar="DIR",
                       help="keep jobs, usage and results in DIR (SQLite) so they survive a "
                            "restart (default with --roster: a folder under your data dir)")
    group.add_argument("--keep-results", default=None, metavar="AGE",
                       help="how long results stay fetchable: 90s, 30m, 1h (default), 2d")
    group.add_argument("--devices", default=None, metavar="LIST",
                       help="one engine replica per device, e.g. cuda:0,cuda:1, or all")
    group.add_argument("--lora-dir", default=None, metavar="DIR",
                       help="the only folder loras[].path may name files in")
    group.add_argument("--allow-hub-loras", action="store_true",
                       help="let loras[].path name Hugging Face hub repos")
    group.add_argument("--upstream", default=None, metavar="URL",
                       help="--engine fal: the fal-compatible queue to forward to "
                            "(default https://queue.fal.run)")
    group.add_argument("--fal-key-file", default=None, metavar="FILE",
                       help="--engine fal: read the server's fal key from FILE (default $FAL_KEY)")
    limits = serve.add_argument_group("connections")
    limits.add_argument("--header-timeout", type=float, default=None, metavar="S",
                        help="seconds a client may take to send a request's headers (default 10)")
    limits.add_argument("--body-timeout", type=float, default=None, metavar="S",
                        help="seconds a client may take to send a request's body (default 30)")
    limits.add_argument("--max-connections-per-address", type=int, default=None, metavar="N",
                        help="open connections one client address may hold (default 128)")


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``30m``, ``1h`` or ``2d``; a ValueError naming the text.

    >>> parse_age("1h"), parse_age("90")
    (3600.0, 90.0)
    """
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in _AGE_UNITS else "s"
    number = raw[:-1] if raw[-1:] in _AGE_UNITS else raw
    try:
        value = float(number) * _AGE_UNITS[unit]
    except ValueError:
        raise ValueError(f"{text!r} is not an age (examples: 90s, 30m, 1h, 2d)") from None
    if not 0 < value <= 30 * 86400:
        raise ValueError(f"{text!r} must be more than 0 and at most 30 days")
    return value


def class_config(args: argparse.Namespace, usage_error: Callable[[str], NoReturn]) -> dict[str, Any]:
    """``ServerConfig`` keywords from the class server's flags, or a usage error naming the flag."""
    config: dict[str, Any] = {}
    for flag, name, low in (("--max-queued", "max_queued", 1), ("--max-queue", "max_queue", 1)):
        value = getattr(args, name)
        if value is not None:
            if value < low:
                usage_error(f"fluxnb serve: {flag} must be >= {low}, not {value}")
            config[name] = value
    for flag, name in (("--budget-mp", "budget_mp"), ("--budget-usd", "budget_usd")):
        value = getattr(args, name)
        if value is not None:
            if not value > 0 or value != value or value == float("inf"):
                usage_error(f"fluxnb serve: {flag} must be a number > 0, not {value}")
            config[name] = value
    for flag, name in (("--blocklist", "blocklist"), ("--fal-key-file", "fal_key_file")):
        path = getattr(args, name)
        if path is not None and not Path(path).is_file():
            usage_error(f"fluxnb serve: {flag} {path}: no such file")
    if args.blocklist is not None:
        from .server.moderation import Blocklist, BlocklistError

        try:  # a bad file is a usage error now, not a traceback at start
            Blocklist.load(args.blocklist)
        except BlocklistError as exc:
            usage_error(f"fluxnb serve: --blocklist {exc}")
        config["blocklist"] = args.blocklist
    if args.keep_results is not None:
        try:
            config["keep_results"] = parse_age(args.keep_results)
        except ValueError as exc:
            usage_error(f"fluxnb serve: --keep-results {exc}")
    if args.state_dir is not None:
        config["state_dir"] = args.state_dir
    if args.devices is not None:
        devices = tuple(d.strip() for d in args.devices.split(",") if d.strip())
        if not devices:
            usage_error("fluxnb serve: --devices needs a list such as cuda:0,cuda:1, or all")
        config["devices"] = devices
        from .server.replicas import resolve_devices  # imports torch for 'all' only

        try:  # no CUDA device for 'all' is a usage error now, not a traceback at start
            resolve_devices(devices)
        except ValueError as exc:
            usage_error(f"fluxnb serve: {exc}")
    if args.lora_dir is not None:
        if not Path(args.lora_dir).is_dir():
            usage_error(f"fluxnb serve: --lora-dir {args.lora_dir}: no such folder")
        config["lora_dir"] = args.lora_dir
    config["allow_hub_loras"] = bool(args.allow_hub_loras)
    if args.upstream is not None or args.fal_key_file is not None:
        if args.engine != "fal":
            usage_error("fluxnb serve: --upstream and --fal-key-file are options of --engine fal")
    if args.upstream is not None:
        config["upstream"] = _upstream(args.upstream, usage_error)
    config.update(_connection_limits(args, usage_error))
    if args.engine == "fal":
        config["fal_key"] = _fal_key(args, usage_error)
    return config


def _upstream(url: str, usage_error: Callable[[str], NoReturn]) -> str:
    """``--upstream`` without its trailing ``/``; a URL with a user or password in it is refused
    without echoing it (the gateway's credential is the fal key, never the URL)."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError:
        usage_error("fluxnb serve: --upstream is not a URL (example: https://queue.fal.run)")
    if "@" in parts.netloc:
        usage_error("fluxnb serve: --upstream must not carry a user name or password "
                    "(user:password@host); give https://host[:port] and the key through "
                    "FAL_KEY or --fal-key-file")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        usage_error(f"fluxnb serve: --upstream must be an http(s) URL such as "
                    f"https://queue.fal.run, not {url!r}")
    return url.strip().rstrip("/")


def _connection_limits(args: argparse.Namespace,
                       usage_error: Callable[[str], NoReturn]) -> dict[str, Any]:
    """``header_timeout``, ``body_timeout`` (seconds > 0) and ``max_connections_per_address``
    (>= 1) from their flags, or a usage error naming the flag and the value."""
    config: dict[str, Any] = {}
    for flag, name in (("--header-timeout", "header_timeout"), ("--body-timeout", "body_timeout")):
        value = getattr(args, name)
        if value is not None:
            if not (value > 0 and math.isfinite(value)):
                usage_error(f"fluxnb serve: {flag} must be a number of seconds > 0, not {value}")
            config[name] = value
    count = args.max_connections_per_address
    if count is not None:
        if count < 1:
            usage_error(f"fluxnb serve: --max-connections-per-address must be >= 1, not {count}")
        config["max_connections_per_address"] = count
    return config


def _fal_key(args: argparse.Namespace, usage_error: Callable[[str], NoReturn]) -> str:
    """The gateway's own fal key: ``--fal-key-file`` or ``$FAL_KEY`` (stripped, never printed)."""
    if args.fal_key_file is not None:
        try:
            raw = Path(args.fal_key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            usage_error(f"fluxnb serve: cannot read --fal-key-file {args.fal_key_file}: "
                        f"{type(exc).__name__}")
        source = "--fal-key-file"
    else:
        raw, source = os.environ.get("FAL_KEY", ""), "FAL_KEY"
    key = _server_key(raw, source, usage_error)
    if key is None:
        usage_error("fluxnb serve: --engine fal needs the server's fal.ai key: set FAL_KEY or "
                    "pass --fal-key-file FILE")
    return key


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
