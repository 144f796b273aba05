"""Moved to :mod:`fluxnb.client.auth` (keys, hosts) and :mod:`fluxnb.client._responses`
(requests and answers); kept for compatibility."""

from __future__ import annotations

from .client._responses import (
    USER_AGENT,
    cancel_outcome,
    error_detail,
    error_for_response,
    extra_submit_headers,
    job_urls,
    log_path,
    merge_logs,
    read_json,
    result_error,
    retry_delay,
    strip_query,
    transport_error_retryable,
    url_of,
)
from .client.auth import (
    Secret,
    auth_headers,
    clean_key,
    fal_env_key,
    host_of,
    is_fal_url,
    resolve_key,
    same_host,
)

__all__ = [
    "USER_AGENT",
    "Secret",
    "auth_headers",
    "cancel_outcome",
    "clean_key",
    "error_detail",
    "error_for_response",
    "extra_submit_headers",
    "fal_env_key",
    "host_of",
    "is_fal_url",
    "job_urls",
    "log_path",
    "merge_logs",
    "read_json",
    "resolve_key",
    "result_error",
    "retry_delay",
    "same_host",
    "strip_query",
    "transport_error_retryable",
    "url_of",
]
