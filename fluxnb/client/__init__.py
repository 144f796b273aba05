"""The queue client: :class:`QueueClient` and its async twin :class:`AsyncQueueClient`.

Both speak fal's queue protocol (submit, status, status stream, result, cancel) to fal.ai or to
fluxnb's local server, with the same method names; the async methods are coroutines (and
``stream_status`` an async iterator).

The package, one job per module (none of them imports the notebook surface, the sweeps or the
server):

* ``_base``: settings, headers, request building, answers -> objects (no I/O), generic over the
  job handle; ``_inputs``: a job's inputs checked and encoded; ``_responses``: error mapping,
  retry decision, submit URLs; ``auth``: keys and the hosts that may receive them.
* ``_sync`` (:class:`QueueClient`, :class:`Job`) and ``_async`` (:class:`AsyncQueueClient`,
  :class:`AsyncJob`): the I/O, twin for twin; ``_follow``: deadlines, stream signals, SSE
  event -> Status; ``sse``: the SSE parser; ``uploads``: fal storage; ``_download``: one-off GETs.
* ``result``: :class:`InpaintResult` and :class:`OutputImage`.

>>> from fluxnb import QueueClient
>>> with QueueClient("http://127.0.0.1:8765") as client:           # doctest: +SKIP
...     result = client.run(prompt="a red fox", image_url="photo.jpg", mask_url="mask.png",
...                         on_enqueue=lambda job: print(job.request_id))
...     result.pil_images()[0]
"""

from __future__ import annotations

from ._async import AsyncJob, AsyncQueueClient
from ._base import DEFAULT_UPLOAD_THRESHOLD
from ._sync import Job, QueueClient
from .result import InpaintResult, OutputImage

__all__ = [
    "DEFAULT_UPLOAD_THRESHOLD",
    "AsyncJob",
    "AsyncQueueClient",
    "InpaintResult",
    "Job",
    "OutputImage",
    "QueueClient",
]
