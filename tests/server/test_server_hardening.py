"""A server a student cannot break: no 500 from odd input, range-checked headers, capped
validation errors, engine errors without their text, and workers that outlive a dying engine.

Every request goes over real HTTP to a :class:`BackgroundServer` on loopback; bodies are sent as
raw bytes where JSON allows what Python's encoder would not produce (lone surrogates)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from fluxnb.server import BackgroundServer
from fluxnb.server.engines import Engine, EngineOutput, EngineRequest, JobContext, register_engine
from fluxnb.server.validate import MAX_ERRORS
from tests.server.test_server_contract import SUBMIT, body, wait_for
from tests.support import eventually

JSON = {"content-type": "application/json"}
SECRET = "sk-live-0123456789abcdef at /home/teacher/.cache/secret-model.bin"


def raw_body(**extra: Any) -> bytes:
    return json.dumps(body(**extra)).encode()


def post_raw(server: BackgroundServer, raw: bytes, **headers: str) -> httpx.Response:
    return httpx.post(server.base_url + SUBMIT, content=raw, headers={**JSON, **headers},
                      timeout=60)


# -- lone surrogates ----------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "raw_value"), [
    ("prompt", b'"\\ud800"'),
    ("prompt", b'"a fox \\udfff"'),
    ("strength", b'"\\ud800"'),
    ("image_url", b'"https://example.invalid/\\udc00.png"'),
    ("loras", b'[{"path": "\\ud800", "scale": 1}]'),
    ("image_size", b'{"\\ud800": 3}'),
])
def test_lone_surrogates_are_422_naming_the_field(live_server: BackgroundServer, field: str,
                                                  raw_value: bytes) -> None:
    data = body()
    data[field] = "PLACEHOLDER"
    raw = json.dumps(data).encode().replace(b'"PLACEHOLDER"', raw_value)
    r = post_raw(live_server, raw)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"][:2] == ["body", field] and detail[0]["type"] == "string_unicode"
    assert "surrogate" in detail[0]["msg"]
    assert not any(e["loc"][1:2] == [field] and e["type"] == "missing" for e in detail)


def test_lone_surrogate_in_a_field_name_is_422(live_server: BackgroundServer) -> None:
    raw = raw_body().replace(b'"prompt"', b'"\\udc00odd": 1, "prompt"')
    r = post_raw(live_server, raw)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["type"] == "string_unicode"


def test_valid_non_ascii_text_still_runs(live_server: BackgroundServer) -> None:
    r = post_raw(live_server, raw_body(prompt="un renard roux \u00e9 \U0001f98a"))
    assert r.status_code == 200, r.text
    assert wait_for(r.json())["status"] == "COMPLETED"
    assert httpx.get(r.json()["response_url"]).status_code == 200


# -- X-Fal-Request-Timeout ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e300", "1e20", "86401", "nan", "inf", "-inf", "-1", "0",
                                   "abc", "9" * 400])
def test_request_timeout_out_of_range_is_422_naming_it(live_server: BackgroundServer,
                                                       value: str) -> None:
    r = post_raw(live_server, raw_body(), **{"X-Fal-Request-Timeout": value})
    assert r.status_code == 422, r.text
    item = r.json()["detail"][0]
    assert item["loc"] == ["header", "x-fal-request-timeout"]
    assert "86400" in item["msg"]


def test_timeout_thread_survives_huge_timeouts(server_factory: Callable[..., BackgroundServer]
                                               ) -> None:
    server = server_factory(engine="null", engine_options={"delay": 0.2}, workers=1)
    for value in ("1e300", "1e308", "86400"):  # the last one is allowed: a job that waits a day
        post_raw(server, raw_body(), **{"X-Fal-Request-Timeout": value})
    blocker = post_raw(server, raw_body(num_images=4)).json()  # keeps the one worker busy
    short = post_raw(server, raw_body(), **{"X-Fal-Request-Timeout": "0.05"}).json()
    done = wait_for(short, timeout=20)
    assert done["error_type"] == "request_timeout", done
    httpx.put(blocker["cancel_url"])


# -- bounded validation -------------------------------------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def test_many_bad_loras_give_a_small_capped_422(live_server: BackgroundServer) -> None:
    r = post_raw(live_server, raw_body(loras=[{"scale": "x"}] * 300))  # 600 errors
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert len(detail) == MAX_ERRORS + 1 and len(r.content) < 8_000
    assert detail[-1]["type"] == "too_many_errors" and detail[-1]["ctx"]["left_out"] == 580
    assert all(e["loc"][1] == "loras" for e in detail[:-1])


def test_an_8_mib_body_of_bad_loras_is_a_small_422(live_server: BackgroundServer) -> None:
    item = b'{"scale": "x"}, '
    count = 8 * 1024 * 1024 // len(item)
    raw = raw_body()[:-1] + b', "loras": [' + item * count + b'{"scale": "x"}]}'
    before = _rss_kib()
    r = post_raw(live_server, raw)
    grown_mib = (_rss_kib() - before) / 1024
    assert r.status_code == 422
    assert len(r.content) < 4_000 and len(r.json()["detail"]) <= MAX_ERRORS + 1
    assert grown_mib < 400, grown_mib  # the answer was 150+ MiB and the server +1 GB before


def test_a_lora_with_a_million_keys_is_one_error(live_server: BackgroundServer) -> None:
    keys = ", ".join(f'"k{i}": 0' for i in range(200_000)).encode()
    raw = raw_body()[:-1] + b', "loras": [{"path": "a", ' + keys + b'}]}'
    r = post_raw(live_server, raw)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert len(detail) == 1 and detail[0]["loc"] == ["body", "loras"]
    assert detail[0]["type"] == "too_long"


def test_many_unknown_fields_make_a_short_log_line(live_server: BackgroundServer) -> None:
    extra = {f"extra_{i}": i for i in range(5_000)}
    r = post_raw(live_server, raw_body(**extra))
    assert r.status_code == 200, r.text
    logs = wait_for(r.json(), logs=1)["logs"]
    line = next(e["message"] for e in logs if e["message"].startswith("ignored unknown"))
    assert len(line) < 1_000 and "4980 more" in line


# -- engine failures ----------------------------------------------------------------------------


class _Raising(Engine):
    name = "raising"
    generative = False

    def __init__(self, exc: str = "runtime"):
        self.exc = exc
        self.calls = 0

    def run(self, request: EngineRequest, ctx: JobContext) -> EngineOutput:
        self.calls += 1
        if request.params["prompt"] == "fine":
            return EngineOutput(images=[request.image.copy()])
        if self.exc == "runtime":
            raise RuntimeError(f"cannot open {SECRET}")
        if self.exc == "systemexit":
            raise SystemExit(f"bye {SECRET}")
        raise KeyboardInterrupt(SECRET)


register_engine("test-raising", _Raising)


def test_engine_errors_never_reach_the_client(server_factory: Callable[..., BackgroundServer],
                                              caplog: pytest.LogCaptureFixture) -> None:
    server = server_factory(engine="test-raising")
    with caplog.at_level(logging.ERROR, logger="fluxnb.server"):
        job = post_raw(server, raw_body()).json()
        status = wait_for(job, logs=1)
        result = httpx.get(job["response_url"])
    seen = json.dumps(status) + result.text + json.dumps(dict(result.headers))
    assert "sk-live" not in seen and "/home/teacher" not in seen and "cannot open" not in seen
    assert result.status_code == 500 and status["error_type"] == "internal_error"
    message = result.json()["detail"]
    assert message.startswith("the engine failed: RuntimeError (ref ")
    ref = message.split("(ref ")[1].split(";")[0]
    assert any(ref in r.getMessage() and r.exc_info and SECRET in str(r.exc_info[1])
               for r in caplog.records)


@pytest.mark.parametrize("kind", ["systemexit", "keyboardinterrupt"])
def test_a_dying_worker_is_replaced(server_factory: Callable[..., BackgroundServer],
                                    kind: str) -> None:
    server = server_factory(engine="test-raising", engine_options={"exc": kind}, workers=1)
    for _ in range(2):  # the replacement worker can die and be replaced again
        job = post_raw(server, raw_body()).json()
        status = wait_for(job)
        assert status["error_type"] == "worker_died", status
        result = httpx.get(job["response_url"])
        assert result.status_code == 500 and "sk-live" not in result.text
        assert result.json()["detail"].startswith("the worker running this job died: ")
        nxt = post_raw(server, raw_body(prompt="fine")).json()
        assert wait_for(nxt)["status"] == "COMPLETED" and "error" not in wait_for(nxt)
    workers = eventually(lambda: [t for t in server.service._threads
                                  if t.name.startswith("fluxnb-worker") and t.is_alive()])
    assert len(workers) == 1
