"""Shared fixtures: real loopback servers, small test images, a clean environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from fluxnb.server import BackgroundServer, ServerConfig


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's key, base URL or proxies."""
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "FLUXNB_BASE_URL", "FLUXNB_KEY",
                 "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="session", autouse=True)
def _data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers with a roster keep durable state under the user's data dir: in tests, a temp dir
    (``$XDG_DATA_HOME``), never the developer's ``~/.local/share``."""
    before = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("data-home"))
    yield
    if before is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = before


@pytest.fixture(autouse=True)
def _own_journal(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own data dir, so its run journal (fluxnb.journal(), the panel's history)
    starts empty: no test sees another's runs."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="session")
def live_server() -> Iterator[BackgroundServer]:
    """The real local server with the preview engine, on a free loopback port; like the laptop
    server of ``fluxnb.connect()`` its downloads may reach loopback (the tests' file servers)."""
    server = BackgroundServer(ServerConfig(engine="preview", workers=2, port=0,
                                           fetch_allow_loopback=True)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def null_server() -> Iterator[BackgroundServer]:
    """The real local server with the null engine at 0.2 s per image: jobs last long enough to
    watch them queue, run and be cancelled."""
    server = BackgroundServer(
        ServerConfig(engine="null", engine_options={"delay": 0.2}, workers=1, port=0)
    ).start()
    yield server
    server.stop()


@pytest.fixture
def server_factory() -> Iterator[Callable[..., BackgroundServer]]:
    """Start servers with any config; all are stopped at the end of the test."""
    started: list[BackgroundServer] = []

    def make(**config: object) -> BackgroundServer:
        config.setdefault("port", 0)
        server = BackgroundServer(ServerConfig(**config)).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def make_test_image(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """A small RGB image with gradients, stripes and noise (made in code, nothing downloaded)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 255 // max(1, width - 1)).astype(np.uint8)
    g = (y * 255 // max(1, height - 1)).astype(np.uint8)
    b = (((x // 8 + y // 8) % 2) * 200).astype(np.uint8)
    arr = np.stack([r, g, b], axis=-1).astype(np.int16) + rng.integers(-6, 7, (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def make_test_mask(width: int = 96, height: int = 64) -> Image.Image:
    """A mode-L mask with a white (repaint) rectangle in the middle."""
    arr = np.zeros((height, width), np.uint8)
    arr[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = 255
    return Image.fromarray(arr, "L")


@pytest.fixture
def image() -> Image.Image:
    return make_test_image()


@pytest.fixture
def mask() -> Image.Image:
    return make_test_mask()


@pytest.fixture
def fal_key_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fake key in FAL_KEY (never a real one)."""
    key = "fake-key-id:fake-key-secret-" + os.urandom(4).hex()
    monkeypatch.setenv("FAL_KEY", key)
    return key


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``@pytest.mark.anyio``) run on asyncio."""
    return "asyncio"


@pytest.fixture(params=["sync", "async"])
def flavor(request: pytest.FixtureRequest) -> str:
    """Run a test once with the sync client and once with the async twin."""
    return str(request.param)
