"""The server's fetch guard: which addresses its own downloads may connect to
(:class:`FetchPolicy`), the resolve-once check of a URL (:func:`checked_addresses`) and a GET
pinned to a checked address (:func:`send_pinned`). Used by ``image_url`` / ``mask_url``
downloads (:mod:`fluxnb.server.inputs`) and LoRA downloads
(:mod:`fluxnb.server.engines.lora_download`).

>>> checked_addresses(httpx.URL("http://127.0.0.1/x.png"), FetchPolicy())
Traceback (most recent call last):
...
fluxnb.server.pinned.FetchRefused: 127.0.0.1 resolves to 127.0.0.1 (loopback)
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import httpx

__all__ = ["FetchPolicy", "FetchRefused", "checked_addresses", "send_pinned"]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Never fetched by a server, whatever the options say: the cloud metadata services.
_METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254",
                                                           "100.100.100.200"))
# Refused by default (names for the server log); anything else that is not ``is_global`` too.
_BLOCKED = tuple((ipaddress.ip_network(net), name) for net, name in (
    ("0.0.0.0/8", "unspecified"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "CGNAT"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"), ("192.168.0.0/16", "private"), ("198.18.0.0/15", "reserved"),
    ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"), ("::/128", "unspecified"),
    ("::1/128", "loopback"), ("fc00::/7", "unique-local"), ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"), ("ff00::/8", "multicast")))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchPolicy:
    """Which addresses the server's own downloads (``image_url`` / ``mask_url``) may connect to.

    By default only public addresses: a host whose resolved addresses include a loopback,
    private, link-local, CGNAT, multicast, reserved, unique-local or other non-global one (an
    IPv4 address embedded in IPv6 counts as itself) is refused before any connection.
    ``allow_loopback`` lets 127/8 and ``::1`` through (the embedded laptop server: only its
    owner can reach it, so it also keeps detailed error messages); ``allow_private`` lets every
    address through except the cloud metadata ones (``fluxnb serve --allow-private-fetch``).

    >>> FetchPolicy().refusal(ipaddress.ip_address("10.1.2.3"))
    'private'
    >>> FetchPolicy().refusal(ipaddress.ip_address("::ffff:169.254.169.254"))
    'cloud metadata (as ::ffff:a9fe:a9fe)'
    >>> FetchPolicy(allow_loopback=True).refusal(ipaddress.ip_address("127.0.0.1")) is None
    True
    """

    allow_private: bool = False
    allow_loopback: bool = False

    @property
    def detailed_errors(self) -> bool:
        """True on an owner-only server: fetch errors say what went wrong instead of
        :attr:`message` for all of them."""
        return self.allow_loopback and not self.allow_private

    @property
    def message(self) -> str:
        """The one message of every failed fetch (no refused / reset / status / size oracle)."""
        if self.allow_private:
            return "the server could not fetch this URL"
        return "the server could not fetch this URL (only public http(s) addresses are fetched)"

    def refusal(self, ip: _Address) -> str | None:
        """Why ``ip`` may not be connected to (a short name for the log), or None."""
        if isinstance(ip, ipaddress.IPv6Address):
            # an IPv4 address inside IPv6 (mapped, 6to4, NAT64) is judged as itself
            embedded = ip.ipv4_mapped or ip.sixtofour
            if embedded is None and ip in _NAT64:
                embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            if embedded is not None:
                reason = self.refusal(embedded)
                if reason is not None:
                    return f"{reason} (as {ip})"
                if ip.ipv4_mapped is not None:
                    return None
        if ip in _METADATA:
            return "cloud metadata"
        if self.allow_private:
            return None
        if ip.is_loopback and self.allow_loopback:
            return None
        for net, name in _BLOCKED:
            if ip in net:
                return name
        if not ip.is_global or ip.is_multicast:
            return "not a public address"
        return None



class FetchRefused(Exception):
    """A URL the fetch policy refuses (the text is for the server log only)."""


def _resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver; tests replace this)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def checked_addresses(url: httpx.URL, policy: FetchPolicy) -> list[_Address]:
    """The addresses to connect to for ``url``: resolved once, and refused (:class:`FetchRefused`)
    unless the scheme is http(s) and *every* address passes ``policy``."""
    if url.scheme not in ("http", "https"):
        raise FetchRefused(f"scheme {url.scheme!r} is not http(s)")
    host = url.host
    if not host:
        raise FetchRefused("no host")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in _resolve(host, port)]
    except (OSError, UnicodeError, ValueError) as exc:
        raise FetchRefused(f"cannot resolve {host}: {type(exc).__name__}: {exc}") from None
    if not found:
        raise FetchRefused(f"{host} resolves to no address")
    for ip in found:
        reason = policy.refusal(ip)
        if reason is not None:
            raise FetchRefused(f"{host} resolves to {ip} ({reason})")
    return found


def send_pinned(client: httpx.Client, url: httpx.URL, addresses: list[_Address]) -> httpx.Response:
    """GET ``url`` over a connection to one of the checked ``addresses`` (in order): the URL
    names the address itself, so nothing is resolved again, while the ``Host`` header and the
    TLS server name (SNI, and the certificate check) stay the URL's host name."""
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    last: Exception | None = None
    for ip in addresses:
        request = client.build_request("GET", url.copy_with(host=str(ip)),
                                       headers={"Host": url.netloc.decode("ascii")},
                                       extensions=extensions)
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError as exc:
            last = exc
    assert last is not None
    raise last
