"""Property test: malformed bodies, odd headers and broken images never get a 5xx.

Every answer is a 4xx with a JSON ``detail`` (or a 200 for an input that happens to be valid),
and a well-formed job submitted alongside still completes.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxnb.server import BackgroundServer, ServerConfig
from tests.conftest import make_test_image, make_test_mask
from tests.server.test_server_contract import SUBMIT, body, data_uri
from tests.support import eventually

FIELDS = ["prompt", "image_url", "mask_url", "num_inference_steps", "guidance_scale", "strength",
          "num_images", "enable_safety_checker", "output_format", "seed", "image_size", "loras",
          "sync_mode"]

_png = io.BytesIO()
make_test_mask(24, 16).save(_png, format="PNG")
PNG = _png.getvalue()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["NaN", "Infinity", "-1e999", "", "jpeg", "square_hd", "1e400", "\x00",
                       "data:", "ftp://x/y.png", "file:///etc/passwd"])
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

wrong_typed = st.fixed_dictionaries(
    {"prompt": json_values, "image_url": json_values, "mask_url": json_values},
    optional={name: json_values for name in FIELDS[3:]},
)

bad_images = st.one_of(
    st.binary(max_size=200).map(lambda b: "data:image/png;base64," + base64.b64encode(b).decode()),
    st.integers(min_value=0, max_value=len(PNG) - 13).map(
        lambda n: "data:image/png;base64," + base64.b64encode(PNG[:n]).decode()),
    st.sampled_from(["image/jpeg", "text/plain", "application/octet-stream", "image/png;charset=x"]).map(
        lambda mime: f"data:{mime};base64," + base64.b64encode(b"GIF89a\x01\x00junk").decode()),
    st.text(max_size=40).map(lambda t: "data:image/png;base64," + t),
    st.text(max_size=40).map(lambda t: "data:" + t),
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


bodies = st.one_of(
    json_values.map(_dumps),
    wrong_typed.map(_dumps),
    st.binary(max_size=300),
    st.tuples(st.just(_dumps(body(seed=1))), st.integers(min_value=0, max_value=200)).map(
        lambda t: t[0][: t[1]]),
    st.tuples(bad_images, st.sampled_from(["image_url", "mask_url"])).map(
        lambda t: _dumps(body(**{t[1]: t[0]}))),
    st.sampled_from([b"[" * 100_000, b"{\"prompt\": " * 50_000, b"1" * 5000, b"\"\\ud800\"",
                     b"\xef\xbb\xbf{}", b"null", b"{\"seed\": 1e999}"]),
)

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
headers = st.fixed_dictionaries({}, optional={
    "Content-Type": header_text | st.sampled_from(["application/json", "text/plain",
                                                   "multipart/form-data; boundary=x"]),
    "Authorization": header_text,
    "Host": st.sampled_from(["example.test", "a..b", "[::1]:80", "host:99999", "x" * 300,
                             "127.0.0.1:abc", "UPPER.case:1"]),
    "X-Fal-Request-Timeout": header_text,
    "X-Fal-Queue-Priority": header_text,
    "X-Fal-Runner-Hint": header_text,
    "X-Fal-Object-Lifecycle-Preference": header_text,
})


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[BackgroundServer]:
    server = BackgroundServer(ServerConfig(engine="preview", workers=1, port=0,
                                           max_body_bytes=256 * 1024)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as c:
        yield c


@pytest.fixture(scope="module")
def alongside(fuzz_server: BackgroundServer, client: httpx.Client) -> dict[str, Any]:
    """A good job submitted before the fuzzing starts."""
    image = data_uri(make_test_image(256, 192))
    mask = data_uri(make_test_mask(256, 192))
    r = client.post(fuzz_server.base_url + SUBMIT,
                    json=body(image_url=image, mask_url=mask, num_images=4, seed=8))
    assert r.status_code == 200
    return r.json()


def _check(r: httpx.Response, *, must_fail: bool) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        payload = r.json()
        assert isinstance(payload, dict) and "detail" in payload, r.text[:300]
    else:
        assert not must_fail, r.text[:300]


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=bodies, extra_headers=headers)
def test_malformed_requests_never_5xx(fuzz_server: BackgroundServer, client: httpx.Client,
                                      alongside: dict[str, Any], raw: bytes,
                                      extra_headers: dict[str, str]) -> None:
    r = client.post(fuzz_server.base_url + SUBMIT, content=raw, headers=extra_headers)
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        parsed = None
    _check(r, must_fail=not isinstance(parsed, dict))


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=wrong_typed)
def test_wrong_types_are_422(fuzz_server: BackgroundServer, client: httpx.Client,
                             values: dict[str, Any]) -> None:
    r = client.post(fuzz_server.base_url + SUBMIT, content=_dumps(values),
                    headers={"Content-Type": "application/json"})
    _check(r, must_fail=True)  # no strategy value is a decodable image
    assert r.status_code == 422


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#%"),
                    max_size=40),
       method=st.sampled_from(["GET", "PUT", "POST", "DELETE"]))
def test_odd_paths_never_5xx(fuzz_server: BackgroundServer, client: httpx.Client, path: str,
                             method: str) -> None:
    r = client.request(method, fuzz_server.base_url + "/fal-ai/flux-lora/" + path, content=b"{}")
    assert r.status_code < 500, (r.status_code, r.text[:200])


def test_job_alongside_completes(fuzz_server: BackgroundServer, client: httpx.Client,
                                 alongside: dict[str, Any]) -> None:
    def completed() -> dict[str, Any] | None:
        data: dict[str, Any] = client.get(alongside["status_url"]).json()
        return data if data["status"] == "COMPLETED" else None

    done = eventually(completed, 20)
    assert done.get("error") is None, done
    out = client.get(alongside["response_url"]).json()
    assert len(out["images"]) == 4 and not math.isnan(out["timings"]["inference"])
    assert fuzz_server.service.stats["jobs"]["failed"] == 0
