"""fluxnb.protocol: status parsing, app ids, the retry policy and progress, table-driven."""

from __future__ import annotations

import email.utils
import random

import pytest

from fluxnb.protocol import (
    RETRY_STATUSES,
    Completed,
    InProgress,
    LogEntry,
    Queued,
    backoff_delay,
    parse_status,
    progress_from_logs,
    request_path,
    retry_after_seconds,
    should_retry_status,
    split_app_id,
)

LOG = {"message": "step 3/28", "level": "INFO", "source": "USER", "timestamp": "2024-08-01T12:00:00"}


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"status": "IN_QUEUE", "queue_position": 3}, Queued(position=3)),
        ({"status": "IN_QUEUE"}, Queued(position=0)),
        ({"status": "IN_PROGRESS", "logs": None}, InProgress(logs=None)),
        ({"status": "IN_PROGRESS"}, InProgress(logs=None)),
        ({"status": "IN_PROGRESS", "logs": [LOG]},
         InProgress(logs=[LogEntry("step 3/28", "INFO", "USER", "2024-08-01T12:00:00")])),
        ({"status": "IN_PROGRESS", "logs": ["plain"]}, InProgress(logs=[LogEntry("plain")])),
        ({"status": "COMPLETED", "logs": None, "metrics": {"inference_time": 1.5}},
         Completed(logs=None, metrics={"inference_time": 1.5})),
        ({"status": "COMPLETED", "logs": [], "metrics": None}, Completed(logs=[], metrics={})),
        ({"status": "COMPLETED", "logs": None, "metrics": {}, "error": "boom", "error_type": "x"},
         Completed(logs=None, metrics={}, error="boom", error_type="x")),
    ],
)
def test_parse_status(body, expected):
    assert parse_status(body) == expected


def test_completed_ok():
    assert Completed().ok and not Completed(error="e").ok


@pytest.mark.parametrize("body", [{"status": "FAILED"}, {"status": "CANCELED"}, {}, {"status": None}])
def test_parse_unknown_status(body):
    with pytest.raises(ValueError, match="unknown job status"):
        parse_status(body)


def test_parse_status_not_an_object():
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_status(["IN_QUEUE"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "app_id, parts, path",
    [
        ("fal-ai/flux-lora/inpainting", ("fal-ai", "flux-lora", "inpainting"),
         "/fal-ai/flux-lora/requests/R"),
        ("fal-ai/flux-lora", ("fal-ai", "flux-lora", ""), "/fal-ai/flux-lora/requests/R"),
        ("/fal-ai/fast-sdxl/image-to-image/", ("fal-ai", "fast-sdxl", "image-to-image"),
         "/fal-ai/fast-sdxl/requests/R"),
        ("fal-ai/x/a/b", ("fal-ai", "x", "a/b"), "/fal-ai/x/requests/R"),
        ("workflows/me/wf/run", ("workflows/me", "wf", "run"), "/workflows/me/wf/requests/R"),
        ("comfy/me/app", ("comfy/me", "app", ""), "/comfy/me/app/requests/R"),
    ],
)
def test_split_app_id_and_request_path(app_id, parts, path):
    assert split_app_id(app_id) == parts
    assert request_path(app_id, "R") == path


@pytest.mark.parametrize("bad", ["fal-ai", "", "workflows/me", "/"])
def test_split_app_id_rejects(bad):
    with pytest.raises(ValueError, match="must look like"):
        split_app_id(bad)


@pytest.mark.parametrize(
    "code, headers, retry",
    [
        (408, None, True), (409, None, True), (429, None, True), (502, None, True),
        (503, None, True), (504, None, True),
        (504, {"X-Fal-Request-Timeout-Type": "user"}, False),
        (504, {"x-fal-request-timeout-type": "user"}, False),
        (503, {"X-Fal-Request-Timeout-Type": "user"}, True),
        (400, None, False), (401, None, False), (403, None, False), (404, None, False),
        (422, None, False), (500, None, False), (200, None, False),
    ],
)
def test_should_retry_status(code, headers, retry):
    assert should_retry_status(code, headers) is retry


def test_retry_statuses():
    assert RETRY_STATUSES == {408, 409, 429, 502, 503, 504}


def test_retry_after_seconds():
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"Retry-After": "-4"}) == 0.0
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"Retry-After": ""}) is None
    assert retry_after_seconds({"Retry-After": "soon"}) is None


def test_retry_after_http_date():
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert retry_after_seconds({"Retry-After": date}, now=now) == pytest.approx(7, abs=1)
    past = email.utils.formatdate(now - 100, usegmt=True)
    assert retry_after_seconds({"Retry-After": past}, now=now) == 0.0


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 8, 12, 30])
def test_backoff_bounds(attempt):
    rng = random.Random(attempt)
    nominal = min(10.0, 0.25 * 2 ** (attempt - 1))
    for _ in range(50):
        delay = backoff_delay(attempt, rng=rng)
        assert 0.5 * nominal <= delay <= 1.5 * nominal


def test_backoff_grows_and_is_jittered():
    delays = [backoff_delay(a, rng=random.Random(0)) for a in range(1, 6)]
    assert delays == sorted(delays)
    draws = {backoff_delay(1, rng=random.Random(s)) for s in range(10)}
    assert len(draws) > 5


def test_backoff_honours_retry_after():
    assert backoff_delay(1, retry_after=5.0, rng=random.Random(0)) == 5.0
    assert backoff_delay(1, retry_after=1000.0, rng=random.Random(0)) == 60.0  # capped
    small = backoff_delay(5, retry_after=0.01, rng=random.Random(0))
    assert small >= 0.5 * 4.0  # a short Retry-After never shortens the backoff


@pytest.mark.parametrize(
    "messages, expected",
    [
        ([], None),
        (["loading"], None),
        (["step 3/28"], (3, 28)),
        (["step 3/28", "step 4/28"], (4, 28)),
        (["step 4/28", "saving 1/1 file", "x"], (1, 1)),
        ([" 45%|####  | 9/20 [00:01<00:02]"], (9, 20)),
        (["ratio 3/0"], None),
        (["step 30/28"], None),
        (["version 1.2/3"], None),
        (["file a/b"], None),
    ],
)
def test_progress_from_logs(messages, expected):
    assert progress_from_logs([LogEntry(m) for m in messages]) == expected


def test_progress_from_no_logs():
    assert progress_from_logs(None) is None


def test_log_entry_round_trip():
    entry = LogEntry.from_json(LOG)
    assert entry.to_json() == LOG
    assert LogEntry.from_json(5).message == "5"


# -- the SSE parser (fluxnb.sse) and the client's pure helpers (fluxnb._http) -----------------

from fluxnb import _http  # noqa: E402
from fluxnb.errors import CredentialsError  # noqa: E402
from fluxnb.sse import SSEEvent, SSEParser  # noqa: E402


def test_sse_events_across_chunks():
    text = 'data: {"a": 1}\n\n: keep-alive\n\nevent: x\nid: 7\nretry: 100\ndata: l1\ndata: l2\n\n'
    whole = SSEParser().feed(text)
    assert whole == [SSEEvent('{"a": 1}'), SSEEvent("l1\nl2", "x", "7", 100)]
    for size in (1, 2, 3, 7):
        parser = SSEParser()
        events = []
        for i in range(0, len(text), size):
            events += parser.feed(text[i:i + size])
        assert events == whole


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_sse_line_endings(newline):
    parser = SSEParser()
    text = f"data: a{newline}data:b{newline}{newline}"
    events = []
    for ch in text:  # a \r\n split across chunks is still one line ending
        events += parser.feed(ch)
    if newline == "\r":
        events += parser.feed("data: c\n\n")  # a lone \r at the end waits for the next character
    assert events[0] == SSEEvent("a\nb")


def test_sse_ignores_comments_empty_events_and_unknown_fields():
    assert SSEParser().feed(": hi\n\n\n\nfoo: bar\n\nevent: only\n\n") == []
    assert SSEParser().feed("data\n\n") == [SSEEvent("")]
    assert SSEParser().feed("data: x") == []  # incomplete event is not dispatched


@pytest.mark.parametrize(
    "url, fal",
    [("https://queue.fal.run", True), ("https://fal.run", True), ("https://rest.fal.ai", True),
     ("https://v3.fal.media", True), ("https://queue.falrun.com", True),
     ("http://127.0.0.1:8000", False), ("https://notfal.run", False), ("https://fal.run.evil.com", False)],
)
def test_is_fal_url(url, fal):
    assert _http.is_fal_url(url) is fal


def test_resolve_key():
    env = {"FAL_KEY": "fk", "FLUXNB_KEY": "nk"}
    assert _http.resolve_key("https://queue.fal.run", None, env) == "fk"
    assert _http.resolve_key("http://127.0.0.1:1", None, env) == "nk"
    assert _http.resolve_key("http://127.0.0.1:1", None, {"FAL_KEY": "fk"}) is None
    both = {"FAL_KEY_ID": "i", "FAL_KEY_SECRET": "s"}
    assert _http.resolve_key("https://queue.fal.run", None, both) == "i:s"
    with pytest.raises(CredentialsError, match="FAL_KEY_SECRET"):  # half a pair: said, not ignored
        _http.resolve_key("https://queue.fal.run", None, {"FAL_KEY_ID": "i"})
    assert _http.resolve_key("http://x", "explicit", env) == "explicit"
    assert _http.resolve_key("https://queue.fal.run", "", env) is None  # "" means: no key


def test_secret_never_shows():
    secret = _http.Secret("abc")
    assert repr(secret) == str(secret) == f"{secret}" == "***" and secret.reveal() == "abc"
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(secret)


def test_transport_error_retryable():
    import httpx

    for exc in (httpx.ConnectError("x"), httpx.ConnectTimeout("x"), httpx.PoolTimeout("x")):
        assert _http.transport_error_retryable(exc, idempotent=False)
    for exc in (httpx.ReadError("x"), httpx.ReadTimeout("x"), httpx.WriteError("x"),
                httpx.RemoteProtocolError("x")):
        assert not _http.transport_error_retryable(exc, idempotent=False)
        assert _http.transport_error_retryable(exc, idempotent=True)
    assert not _http.transport_error_retryable(httpx.UnsupportedProtocol("x"), idempotent=True)
    bad_cert = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert not _http.transport_error_retryable(bad_cert, idempotent=True)
    assert not _http.transport_error_retryable(ValueError("x"), idempotent=True)


def test_retry_delay_decision():
    import httpx

    rng = random.Random(0)
    assert _http.retry_delay(1, 3, response=httpx.Response(503), rng=rng) is not None
    assert _http.retry_delay(4, 3, response=httpx.Response(503), rng=rng) is None  # retries used up
    assert _http.retry_delay(1, 3, response=httpx.Response(404), rng=rng) is None
    assert _http.retry_delay(1, 3, response=httpx.Response(429, headers={"Retry-After": "9"}), rng=rng) == 9
    assert _http.retry_delay(1, 3, exc=httpx.ReadError("x"), idempotent=False) is None
    assert _http.retry_delay(1, 0, exc=httpx.ConnectError("x")) is None


def test_merge_logs():
    a, b, c = LogEntry("a"), LogEntry("b"), LogEntry("c")
    assert _http.merge_logs([a], [a, b]) == [a, b]  # cumulative updates replace
    assert _http.merge_logs([a, b], [c]) == [a, b, c]  # incremental updates append
    assert _http.merge_logs([a], None) == [a]


def test_storage_token_expiry():
    from fluxnb.uploads import parse_token

    token = parse_token({"token": "t", "token_type": "Bearer", "base_url": "https://c.test/",
                         "expires_at": "2030-01-01T00:00:00+00:00"}, cdn_url="https://d.test", now=0)
    assert token.base_url == "https://c.test" and token.expires_at == 1893456000.0
    assert token.header() == {"Authorization": "Bearer t"} and "t" not in repr(token.token)
    fallback = parse_token({"token": "t"}, cdn_url="https://d.test", now=100.0)
    assert fallback.base_url == "https://d.test" and fallback.expires_at > 100
