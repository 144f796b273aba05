"""Helpers for tests: :func:`eventually` / :func:`aeventually` (wait for a condition instead of a
hand-written deadline loop or a sleep), and ``fluxnb serve`` as a real process, with or without
TLS."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

__all__ = ["ServeProcess", "aeventually", "eventually", "free_port", "self_signed_cert", "terminate",
           "tls_context"]

T = TypeVar("T")

Message = str | Callable[[], str]


def _timed_out(message: Message, timeout: float) -> AssertionError:
    text = message() if callable(message) else message
    return AssertionError(f"not true after {timeout} s" + (f": {text}" if text else ""))


def eventually(predicate: Callable[[], T], timeout: float = 10.0, message: Message = "", *,
               interval: float = 0.02) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy, and
    return that; after ``timeout`` seconds an AssertionError with ``message`` (a string, or a
    callable for a message that shows the state at that moment). An exception the predicate
    raises propagates at once.

    >>> eventually(lambda: 42)
    42
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(message, timeout)
        time.sleep(interval)


async def aeventually(predicate: Callable[[], T | Awaitable[T]], timeout: float = 10.0,
                      message: Message = "", *, interval: float = 0.02) -> T:
    """:func:`eventually` for async tests: the event loop keeps running while it waits, and
    ``predicate`` may be a coroutine function."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise _timed_out(message, timeout)
        await asyncio.sleep(interval)


def tls_context(cafile: Path | str) -> ssl.SSLContext:
    """An SSL context that trusts ``cafile`` (httpx wants a context, not a path)."""
    return ssl.create_default_context(cafile=str(cafile))


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1 / localhost; returns (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s; returns once the process is gone."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class ServeProcess:
    """``python -m fluxnb serve ...`` in a subprocess, ready when ``/_fluxnb/info`` answers.
    That page needs a teacher's token when the server has a key or a roster: ``token`` (else the
    value of a ``--key`` in ``args``) is sent as ``Authorization: Key <token>``."""

    def __init__(self, args: Sequence[str], *, port: int | None = None, cert: Path | None = None,
                 key: Path | None = None, log: Path | None = None, token: str | None = None):
        args = list(args)
        if token is None and "--key" in args[:-1]:
            token = args[args.index("--key") + 1].strip()
        self.headers = {"Authorization": f"Key {token}"} if token else {}
        self.port = port or free_port()
        self.cert = cert
        self.scheme = "https" if cert else "http"
        self.base_url = f"{self.scheme}://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "fluxnb", "serve", "--port", str(self.port), *args]
        if cert and key:
            cmd += ["--certfile", str(cert), "--keyfile", str(key)]
        self.log_path = log
        self._log = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if k not in ("FAL_KEY", "SSL_CERT_FILE")}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 30.0) -> ServeProcess:
        verify = tls_context(self.cert) if self.cert else True

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fluxnb serve exited with {self.proc.returncode}: {self.output()}")
            try:
                return httpx.get(f"{self.base_url}/_fluxnb/info", verify=verify,
                                 headers=self.headers, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            eventually(ready, timeout, interval=0.1)
        except AssertionError:
            raise TimeoutError(f"fluxnb serve not ready after {timeout} s: {self.output()}") from None
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        terminate(self.proc)
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def __enter__(self) -> ServeProcess:
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
