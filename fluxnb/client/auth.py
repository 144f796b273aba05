"""Keys and hosts: :class:`Secret`, where a key comes from and which hosts may receive it.

Pure (no I/O). The clients and ``connect()`` share these rules: a user's fal key is sent only to
fal's hosts unless passed explicitly; ``FLUXNB_KEY`` goes to any other host; a key never shows up
in a repr, a message or a pickle.

>>> is_fal_url("https://queue.fal.run"), is_fal_url("http://127.0.0.1:8765")
(True, False)
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from typing import NoReturn

from ..errors import CredentialsError

__all__ = [
    "Secret",
    "auth_headers",
    "clean_key",
    "fal_env_key",
    "host_of",
    "is_fal_url",
    "resolve_key",
    "same_host",
]

#: Hosts that belong to fal.ai: only these ever get the user's FAL_KEY implicitly.
_FAL_DOMAINS = ("fal.run", "fal.ai", "falrun.com", "fal.media")


class Secret:
    """Holds an API key so that ``repr``/``str``/formatting never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:  # never pickle a key into a saved object
        raise TypeError("a fluxnb key cannot be pickled")


def host_of(url: str) -> str:
    return (urllib.parse.urlsplit(url).hostname or "").lower()


def is_fal_url(url: str) -> bool:
    """True when ``url`` points at fal.ai's infrastructure (``queue.fal.run``, ``rest.fal.ai``, ...)."""
    host = host_of(url)
    return any(host == d or host.endswith("." + d) for d in _FAL_DOMAINS)


def same_host(url: str, other: str) -> bool:
    """Same scheme, host and port: the origin a key was meant for."""
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(other)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def clean_key(value: object, source: str) -> str:
    """``value`` without surrounding whitespace, or a :class:`CredentialsError` that names
    ``source`` (``"key="``, ``"FLUXNB_KEY"``, ...) and never the value.

    A key is printable ASCII: it travels in an HTTP header, so a character outside that range
    (a typographic quote, a line break inside) could only fail later with the key in the message.

    >>> clean_key("class-secret\\n", "FLUXNB_KEY")
    'class-secret'
    """
    what = f"the key in {source}" if source.isupper() else f"the key passed as {source}"
    if not isinstance(value, str):
        raise CredentialsError(f"{what} must be a string, not {type(value).__name__}")
    key = value.strip()
    if not key:
        raise CredentialsError(f"{what} is empty (nothing but whitespace): set it to the key itself, "
                               "or leave it unset")
    if not key.isascii():
        raise CredentialsError(f"{what} contains a non-ASCII character (a key is printable ASCII; "
                               "typographic quotes often come with a copy from a web page or a "
                               "document): copy the key again. The key is not shown here.")
    if not key.isprintable():
        raise CredentialsError(f"{what} contains a control character inside it (a line break or a "
                               "tab: a key is one line of printable ASCII): copy the key again. "
                               "The key is not shown here.")
    return key


def fal_env_key(environ: Mapping[str, str] | None = None) -> str | None:
    """fal.ai's key from the environment, as fal-client reads it: ``FAL_KEY``, else
    ``FAL_KEY_ID:FAL_KEY_SECRET``; None when neither is set. Half of the pair is an error naming
    both variables (``connect()`` and the client use this one rule)."""
    env = os.environ if environ is None else environ
    if env.get("FAL_KEY"):
        return clean_key(env["FAL_KEY"], "FAL_KEY")
    key_id, secret = env.get("FAL_KEY_ID"), env.get("FAL_KEY_SECRET")
    if key_id and secret:
        return f"{clean_key(key_id, 'FAL_KEY_ID')}:{clean_key(secret, 'FAL_KEY_SECRET')}"
    if key_id or secret:
        have, lack = ("FAL_KEY_ID", "FAL_KEY_SECRET") if key_id else ("FAL_KEY_SECRET", "FAL_KEY_ID")
        raise CredentialsError(
            f"{have} is set but {lack} is not: fal's key is the pair FAL_KEY_ID + FAL_KEY_SECRET, "
            f"or one FAL_KEY='<key_id>:<key_secret>'. Set {lack} too (or FAL_KEY), or unset {have}.")
    return None


def resolve_key(base_url: str, key: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The key to send, stripped of surrounding whitespace: ``key`` if given (``""`` means none);
    else fal's key (:func:`fal_env_key`) for fal's hosts only, and ``FLUXNB_KEY`` for any other
    host. A user's fal key is never sent to a host that is not fal's unless passed explicitly.
    An unusable key is a :class:`CredentialsError` naming where it came from, never its value."""
    if key is not None:
        return clean_key(key, "key=") if key != "" else None
    env = os.environ if environ is None else environ
    if is_fal_url(base_url):
        return fal_env_key(env)
    value = env.get("FLUXNB_KEY")
    return clean_key(value, "FLUXNB_KEY") if value else None


def auth_headers(secret: Secret | None) -> dict[str, str]:
    return {"Authorization": f"Key {secret.reveal()}"} if secret is not None else {}

