"""Moved: the job service to :mod:`fluxnb.server.service` (``Job`` is now ``JobRecord``), the
worker to :mod:`fluxnb.server.worker`, the result files to :mod:`fluxnb.server.store`; kept for
compatibility.

>>> from fluxnb.server.jobs import Job, JobService
>>> Job.__name__
'JobRecord'
"""

from __future__ import annotations

from ..protocol import COMPLETED, IN_PROGRESS, IN_QUEUE
from .service import JobRecord, JobService
from .store import FILES_PREFIX

Job = JobRecord

__all__ = ["COMPLETED", "FILES_PREFIX", "IN_PROGRESS", "IN_QUEUE", "Job", "JobRecord", "JobService"]
