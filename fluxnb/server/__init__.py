"""fluxnb's local fal-compatible queue server (``fal-ai/flux-lora/inpainting`` on your machine).

>>> from fluxnb.server import BackgroundServer, ServerConfig
>>> with BackgroundServer(ServerConfig(engine="preview", port=0)) as server:
...     url = server.base_url          # point fluxnb.QueueClient(base_url=url) at it

``serve(config)`` runs it in the foreground (``fluxnb serve``); ``create_app(config)`` gives the
FastAPI app for any ASGI server.
"""

from __future__ import annotations

from .app import create_app
from .config import ServerConfig
from .host import BackgroundServer, serve

__all__ = ["BackgroundServer", "ServerConfig", "create_app", "serve"]
