"""The engine interface: what the local server hands an engine and what it gets back.

An engine sees decoded, validated inputs and never touches HTTP, queues or storage. To add
one, subclass :class:`Engine` and register a factory (see :mod:`fluxnb.server.engines`)::

    class Sepia(Engine):
        name = "sepia"
        description = "tints the masked area; not a generative model"

        def run(self, request, ctx):
            for i in range(request.steps):
                ctx.step(i + 1, request.steps)      # logs "step i/n" and honours cancel
            return EngineOutput(images=[request.image.copy()])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

__all__ = [
    "Engine",
    "EngineCancelled",
    "EngineInputError",
    "EngineOutput",
    "EngineRequest",
    "JobContext",
]


class EngineCancelled(Exception):
    """Raised inside an engine (by :meth:`JobContext.step`) when the job was cancelled."""


class EngineInputError(Exception):
    """An input the schema accepted but the engine cannot use; becomes a 422 naming ``field``."""

    def __init__(self, field: str, message: str, error_type: str = "value_error"):
        self.field = field
        self.error_type = error_type
        super().__init__(message)


@dataclass
class EngineRequest:
    """One job's inputs, decoded and validated.

    ``image`` is RGB and ``mask`` is mode L of the same size (white = repaint); both are already
    resized to ``image_size`` when one was given. ``params`` holds every schema field with its
    default filled in and ``seed`` resolved (a random one is drawn when the caller gave none).
    """

    image: Image.Image
    mask: Image.Image
    params: dict[str, Any]
    seed: int

    @property
    def prompt(self) -> str:
        return str(self.params["prompt"])

    @property
    def steps(self) -> int:
        return int(self.params["num_inference_steps"])

    @property
    def strength(self) -> float:
        return float(self.params["strength"])

    @property
    def guidance_scale(self) -> float:
        return float(self.params["guidance_scale"])

    @property
    def num_images(self) -> int:
        return int(self.params["num_images"])

    @property
    def loras(self) -> list[dict[str, Any]]:
        return list(self.params.get("loras") or [])


class JobContext(Protocol):
    """What a running engine may do to its job: log, report steps, notice cancellation."""

    def log(self, message: str, level: str = "INFO") -> None:
        """Append a line to the job's logs (seen through status ``logs`` and the SSE stream)."""

    def step(self, done: int, total: int, *, image_index: int = 0, num_images: int = 1) -> None:
        """Log ``step done/total`` and raise :class:`EngineCancelled` if the job was cancelled."""

    @property
    def cancelled(self) -> bool:
        """True once a cancel was requested."""

    def check_cancelled(self) -> None:
        """Raise :class:`EngineCancelled` if a cancel was requested."""


@dataclass
class EngineOutput:
    """An engine's answer: PIL images (any mode; the server encodes them) and extra metadata.

    ``extra`` is merged into the JSON result (e.g. ``{"engine": "preview", "notice": ...}``);
    ``has_nsfw_concepts`` defaults to all False.
    """

    images: list[Image.Image]
    has_nsfw_concepts: list[bool] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: what the job cost (the fal gateway: output megapixels at the published price), in USD
    cost_usd: float | None = None


class Engine(ABC):
    """Base class of every engine. Engines must be safe to call from several worker threads
    unless ``max_concurrency`` says otherwise (the server then serialises calls)."""

    #: Short name used by ``fluxnb serve --engine NAME``.
    name: str = "engine"
    #: One line saying what the engine does, shown in logs and responses.
    description: str = ""
    #: False for engines that are not generative models (every response then says so).
    generative: bool = True
    #: How many jobs may run inside this engine at once (None: as many as there are workers).
    max_concurrency: int | None = None
    #: Paste-back (issue 12): the server puts the input's own pixels back beyond a feather band
    #: around the mask (:mod:`~fluxnb.server.engines.compose`). ``--engine-option
    #: paste_back=false`` turns it off (the engine's raw output); ``paste_back_feather=N`` sets
    #: the band in px (None: 1/64 of the short side, at least 4). Set by ``create_engine``.
    paste_back: bool = True
    paste_back_feather: int | None = None

    def load(self) -> None:  # noqa: B027 - an optional hook: a no-op unless an engine overrides it
        """Load weights or warm up; called once before the server takes jobs."""

    @abstractmethod
    def run(self, request: EngineRequest, ctx: JobContext) -> EngineOutput:
        """Produce ``request.num_images`` images for one job."""

    def info(self) -> dict[str, Any]:
        """What the server reports about this engine (``GET /_fluxnb/info`` and the logs)."""
        return {"name": self.name, "description": self.description, "generative": self.generative}
