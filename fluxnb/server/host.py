"""Hosting the app with uvicorn: in a background thread (notebooks, tests) or blocking (CLI).

>>> from fluxnb.server import BackgroundServer, ServerConfig
>>> with BackgroundServer(ServerConfig(engine="null", port=0)) as server:
...     server.base_url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from .app import create_app
from .config import ServerConfig
from .connections import ConnectionLimits, guarded_protocol, quiet_disconnects, raise_fd_limit
from .service import JobService

__all__ = ["BackgroundServer", "serve"]

logger = logging.getLogger("fluxnb.server")

_START_TIMEOUT = 60.0


def _startup_line(config: ServerConfig, service: JobService, port: int, people: int = 0) -> str:
    engine = service.engine
    line = (f"fluxnb server listening on {config.scheme}://{_host_for_url(config.host)}:{port} "
            f"(host {config.host}, port {port}) engine={engine.name} workers={config.workers}")
    if config.devices:  # one engine replica per device (--devices), workers= per replica
        line += " devices=" + ",".join(str(r["device"]) for r in service.replicas())
    if not engine.generative:
        line += f"; {engine.name} is a preview engine, not a generative model"
    if config.key is not None:
        line += "; clients must send 'Authorization: Key <key>'"
    if config.roster is not None:
        line += (f"; roster {config.roster} ({people} people; "
                 "SIGHUP reloads it): clients send 'Authorization: Key <their token>'")
    return line


def _reload_on_sighup(auth: Any, blocklist: Any = None) -> None:
    """``kill -HUP <pid>`` re-reads the roster (and the ``--blocklist``); a bad file is logged
    and the old one stays."""
    def reload(_signum: int, _frame: Any) -> None:
        if getattr(auth, "roster_path", None) is not None:
            try:
                count = auth.reload()
            except ValueError as exc:
                logger.error("roster not reloaded (the old one stays): %s", exc)
            else:
                logger.info("roster reloaded: %d people", count)
        if blocklist is not None:  # moderation (issue 11, item 6)
            try:
                entries = blocklist.reload()
            except ValueError as exc:
                logger.error("blocklist not reloaded (the old one stays): %s", exc)
            else:
                logger.info("blocklist reloaded: %d entries", entries)

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, reload)


def _exposure_warnings(config: ServerConfig) -> list[str]:
    """What to warn about when the server is reachable from other machines.

    >>> _exposure_warnings(ServerConfig(host="0.0.0.0"))[0][:40]
    'listening beyond loopback (0.0.0.0) with'
    """
    if config.host in ("127.0.0.1", "localhost", "::1"):
        return []
    warnings = []
    if config.key is None and config.roster is None:
        warnings.append(f"listening beyond loopback ({config.host}) without --key: anyone who can "
                        "reach this port can submit jobs")
    if config.certfile is None:
        warnings.append(f"listening beyond loopback ({config.host}) without TLS: keys and images "
                        "cross the network in clear text (use --certfile/--keyfile)")
    return warnings


def _host_for_url(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _uvicorn_config(app: Any, config: ServerConfig, **extra: Any) -> uvicorn.Config:
    """uvicorn's settings, with the connection limits of :mod:`.connections` (TLS or not)."""
    raise_fd_limit()
    return uvicorn.Config(quiet_disconnects(app), host=config.host, port=config.port,
                          ssl_certfile=config.certfile, ssl_keyfile=config.keyfile,
                          http=guarded_protocol(ConnectionLimits.of(config)), ws="none",
                          lifespan="on", timeout_graceful_shutdown=2, **extra)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class BackgroundServer:
    """A local server in a daemon thread; :meth:`start` returns once it accepts connections.

    It binds ``config.host:config.port``; when that port is taken it binds a free port instead
    (and logs a warning), so several notebooks and test sessions can each embed one. ``port=0``
    always picks a free port; read the result from :attr:`port` / :attr:`base_url`.

    >>> server = BackgroundServer(ServerConfig(port=0)).start()
    >>> server.base_url                                  # doctest: +SKIP
    'http://127.0.0.1:40123'
    >>> server.stop()
    """

    def __init__(self, config: ServerConfig | None = None):
        self.config = config if config is not None else ServerConfig(port=0)
        self.app = create_app(self.config)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def service(self) -> JobService:
        """The job service (queue, workers, ``stats``)."""
        return self.app.state.service  # type: ignore[no-any-return]

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` to point a client at."""
        return f"{self.config.scheme}://{_host_for_url(self.config.host)}:{self.port}"

    def start(self) -> BackgroundServer:
        """Start uvicorn in a daemon thread and wait until it is listening."""
        if self._thread is not None:
            return self
        try:
            sock = _bind(self.config.host, self.config.port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or self.config.port == 0:
                raise
            sock = _bind(self.config.host, 0)
            logger.warning("port %d is in use; the fluxnb server uses free port %d instead",
                           self.config.port, sock.getsockname()[1])
        cfg = _uvicorn_config(self.app, self.config, log_config=None, access_log=False,
                              log_level="warning")
        server = uvicorn.Server(cfg)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # noqa: BLE001 - reported by start()
                failure.append(exc)
            finally:
                sock.close()

        thread = threading.Thread(target=run, name="fluxnb-server", daemon=True)
        self._server, self._thread = server, thread
        self._port = int(sock.getsockname()[1])
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(5)
                self._server = self._thread = None
                self._port = None
                cause = failure[0] if failure else None
                raise RuntimeError(f"the fluxnb server did not start on {self.config.host}:"
                                   f"{self.config.port}: {cause!r}") from cause
            time.sleep(0.01)
        logger.info(_startup_line(self.config, self.service, self._port,
                                  len(self.app.state.auth.people)))
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop uvicorn and the workers; result files are deleted."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"{self.base_url}" if self._port is not None and self._thread else "stopped"
        return f"BackgroundServer({state}, engine={self.config.engine!r})"


def serve(config: ServerConfig | None = None) -> None:
    """Run the server in the foreground until Ctrl-C (what ``fluxnb serve`` calls).

    >>> serve(ServerConfig(engine="preview", port=8000))   # doctest: +SKIP
    """
    config = config if config is not None else ServerConfig()
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    app = create_app(config)
    if config.roster is not None or app.state.blocklist is not None:
        _reload_on_sighup(app.state.auth, app.state.blocklist)
    logger.info(_startup_line(config, app.state.service, config.port, len(app.state.auth.people)))
    for warning in _exposure_warnings(config):
        logger.warning(warning)
    uvicorn.Server(_uvicorn_config(app, config, log_level="info")).run()
