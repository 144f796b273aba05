"""The unmodified official fal-client against ``fluxnb serve`` over TLS (self-signed certificate).

Recipe A of fal-protocol.md section 11: fal-client reads its hosts when it is imported, so it runs
in a subprocess whose environment points it at the local server; nothing in fal-client is patched.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ..conftest import make_test_image, make_test_mask
from ..support import ServeProcess, self_signed_cert, tls_context

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("falconf")
    cert, key = self_signed_cert(folder)
    image_path, mask_path = folder / "image.png", folder / "mask.png"
    make_test_image(96, 64).save(image_path)
    make_test_mask(96, 64).save(mask_path)
    # one worker and a null engine at 0.15 s per image: jobs last long enough to queue and cancel
    server = ServeProcess(["--engine", "null", "--engine-option", "delay=0.15", "--workers", "1"],
                          cert=cert, key=key, log=folder / "server.log")
    with server:
        env = dict(os.environ, FAL_KEY="conformance-test-key",
                   FAL_QUEUE_RUN_HOST=f"127.0.0.1:{server.port}",
                   FAL_RUN_HOST=f"127.0.0.1:{server.port}/_fluxnb/run",
                   SSL_CERT_FILE=str(cert), NO_PROXY="127.0.0.1,localhost")
        done = subprocess.run([sys.executable, str(HERE / "fal_client_probe.py"), str(image_path),
                               str(mask_path)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        seen = json.loads(done.stdout)
        seen["_port"] = server.port
        seen["_cert"] = str(cert)
        # the output image URLs are served by the server itself, over the same TLS
        url = seen["subscribe"]["images"][0]["url"]
        seen["_downloaded"] = Image.open(io.BytesIO(httpx.get(url, verify=tls_context(cert)).content)).size
        seen["_server_log"] = server.output()
    return seen


def test_subscribe_returns_a_complete_result(probe: dict) -> None:
    out = probe["subscribe"]
    assert out["seed"] == 7 and out["prompt"] == "a red fox"
    assert len(out["images"]) == 1 and out["has_nsfw_concepts"] == [False]
    image = out["images"][0]
    assert image["url"].startswith(f"https://127.0.0.1:{probe['_port']}/")
    assert (image["width"], image["height"]) == (96, 64) == probe["_downloaded"]
    assert image["content_type"] == "image/png"
    assert isinstance(out["timings"], dict)


def test_subscribe_saw_progress_with_logs(probe: dict) -> None:
    assert len(probe["subscribe_enqueued"]) == 1
    kinds = [u["type"] for u in probe["subscribe_updates"]]
    assert kinds[-1] == "Completed"
    running = [u for u in probe["subscribe_updates"] if u["type"] == "InProgress"]
    assert running, kinds
    messages = [line["message"] for u in running for line in (u["logs"] or [])]
    assert any("step" in m for m in messages), messages


def test_handle_urls_and_get_handle_are_exactly_the_servers(probe: dict) -> None:
    handle = probe["handle"]
    base = f"https://127.0.0.1:{probe['_port']}/fal-ai/flux-lora/requests/{handle['request_id']}"
    assert handle["response_url"] == base
    assert handle["status_url"] == base + "/status"
    assert handle["cancel_url"] == base + "/cancel"
    assert probe["get_handle"] == handle


def test_status_with_and_without_logs(probe: dict) -> None:
    assert probe["status_no_logs"]["type"] in ("Queued", "InProgress", "Completed")
    if probe["status_no_logs"]["type"] != "Queued":
        assert probe["status_no_logs"]["logs"] is None
    assert probe["final_no_logs"] == {"type": "Completed", "logs": None,
                                      "metrics": probe["final_no_logs"]["metrics"],
                                      "error": None, "error_type": None}
    assert "inference_time" in probe["final_no_logs"]["metrics"]
    logs = probe["final_with_logs"]["logs"]
    assert logs and all({"message", "level", "source", "timestamp"} <= set(x) for x in logs)


def test_result_can_be_fetched_again(probe: dict) -> None:
    assert probe["get"] == probe["result_again"]
    assert probe["get"]["images"][0]["url"].startswith("https://")


def test_cancel_queued_job_and_completed_job(probe: dict) -> None:
    assert probe["victim_before_cancel"]["type"] == "Queued"
    after = probe["victim_after_cancel"]
    assert after["type"] == "Completed" and after["error"] and after["error_type"] == "request_cancelled"
    assert probe["victim_result_error"]["status_code"] == 400
    assert probe["cancel_completed"]["status_code"] == 400
    assert "ALREADY_COMPLETED" in probe["cancel_completed"]["message"]


def test_run_uses_the_synchronous_api_and_gets_the_output(probe: dict) -> None:
    out = probe["run"]
    assert "status" not in out and "request_id" not in out  # the output, not a queue envelope
    assert out["seed"] == 7 and len(out["images"]) == 1
    assert out["images"][0]["url"].startswith(f"https://127.0.0.1:{probe['_port']}/")


def test_validation_error_is_a_422_naming_the_field(probe: dict) -> None:
    assert probe["invalid"]["status_code"] == 422
    assert "num_inference_steps" in probe["invalid"]["message"]
    assert "1 to 50" in probe["invalid"]["message"]


def test_server_log_never_shows_the_key(probe: dict) -> None:
    assert "conformance-test-key" not in probe["_server_log"]
