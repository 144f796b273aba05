"""The unmodified official fal-client against ``fluxnb serve`` over TLS (self-signed certificate).

Recipe A of fal-protocol.md section 11: fal-client reads its hosts when it is imported, so it runs
in a subprocess whose environment points it at the local server; nothing in fal-client is patched.

Every test runs twice (one server and one probe per mode): against an open ``fluxnb serve``, and
against ``fluxnb serve --roster`` with a student's token in ``FAL_KEY`` (issue 11: the class
server keeps fal-client working, and another student's request id is a 404 through fal-client).
"""

from __future__ import annotations

import base64
import io
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from fluxnb.server.auth import new_roster, write_roster

from ..conftest import make_test_image, make_test_mask
from ..support import ServeProcess, eventually, self_signed_cert, tls_context

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parents[1]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Key {token}"}


@pytest.fixture(scope="module", params=["open", "student"])
def probe(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    mode = str(request.param)
    folder = tmp_path_factory.mktemp(f"falconf-{mode}")
    cert, key = self_signed_cert(folder)
    verify = tls_context(cert)
    image_path, mask_path = folder / "image.png", folder / "mask.png"
    make_test_image(96, 64).save(image_path)
    make_test_mask(96, 64).save(mask_path)
    # one worker and a null engine at 0.15 s per image: jobs last long enough to queue and cancel
    args = ["--engine", "null", "--engine-option", "delay=0.15", "--workers", "1"]
    fal_key, teacher_token, other = "conformance-test-key", None, None
    if mode == "student":
        ada, other, teacher = new_roster(2, teachers=1)
        args += ["--roster", str(write_roster(folder / "roster.csv", [ada, other, teacher]))]
        fal_key, teacher_token = ada.token, teacher.token
    server = ServeProcess(args, cert=cert, key=key, log=folder / "server.log", token=teacher_token)
    with server:
        env = dict(os.environ, FAL_KEY=fal_key,
                   FAL_QUEUE_RUN_HOST=f"127.0.0.1:{server.port}",
                   FAL_RUN_HOST=f"127.0.0.1:{server.port}/_fluxnb/run",
                   SSL_CERT_FILE=str(cert), NO_PROXY="127.0.0.1,localhost")
        seen: dict = {"_mode": mode, "_secrets": [fal_key]}
        if other is not None:  # another student's job, for the probe's fal-client to try
            theirs = httpx.post(f"{server.base_url}/fal-ai/flux-lora/inpainting", verify=verify,
                                headers=_auth(other.token), json={
                                    "prompt": "bob's", "image_url": _data_uri(image_path),
                                    "mask_url": _data_uri(mask_path)})
            assert theirs.status_code == 200, theirs.text
            env["FLUXNB_PROBE_FOREIGN_ID"] = seen["_foreign_id"] = theirs.json()["request_id"]
            seen["_secrets"] += [other.token, str(teacher_token)]
        done = subprocess.run([sys.executable, str(HERE / "fal_client_probe.py"), str(image_path),
                               str(mask_path)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        seen.update(json.loads(done.stdout))
        seen["_port"] = server.port
        seen["_cert"] = str(cert)
        # the output image URLs are served by the server itself, over the same TLS (a roster
        # server serves them to their owner only)
        url = seen["subscribe"]["images"][0]["url"]
        got = httpx.get(url, verify=verify, headers=_auth(fal_key))
        seen["_downloaded"] = Image.open(io.BytesIO(got.content)).size
        seen["_unauthenticated_download"] = httpx.get(url, verify=verify).status_code
        # the status stream (SSE) of the probe's finished job, with the probe's own token
        stream = httpx.get(seen["handle"]["status_url"] + "/stream", verify=verify,
                           headers=_auth(fal_key), timeout=30)
        seen["_own_stream"] = (stream.status_code, stream.headers.get("content-type", ""),
                               [json.loads(line[5:]) for line in stream.text.splitlines()
                                if line.startswith("data:")])
        if other is not None:
            seen["_other"] = _what_another_student_sees(server.base_url, verify, seen, url,
                                                        other.token, theirs.json())
        seen["_server_log"] = server.output()
    return seen


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _what_another_student_sees(base: str, verify: ssl.SSLContext, seen: dict, image_url: str,
                               token: str, theirs: dict) -> dict:
    """Status codes another student gets for the probe's job and output, and their own job's
    end (the probe's fal-client tried to cancel it)."""
    mine = f"{base}/fal-ai/flux-lora/requests/{seen['handle']['request_id']}"
    headers = _auth(token)
    codes = {name: httpx.request(method, url, verify=verify, headers=headers).status_code
             for name, method, url in (("status", "GET", mine + "/status"),
                                       ("stream", "GET", mine + "/status/stream"),
                                       ("result", "GET", mine), ("cancel", "PUT", mine + "/cancel"),
                                       ("image", "GET", image_url))}

    def finished() -> dict | None:
        body = httpx.get(theirs["status_url"], verify=verify, headers=headers).json()
        return body if body["status"] == "COMPLETED" else None

    codes["own_job"] = eventually(finished, 30, "the other student's job never finished")
    return codes


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
    assert all(secret not in probe["_server_log"] for secret in probe["_secrets"])


def test_the_status_stream_answers_its_owner_with_server_sent_events(probe: dict) -> None:
    code, content_type, events = probe["_own_stream"]
    assert code == 200 and content_type.startswith("text/event-stream")
    assert events and events[-1]["status"] == "COMPLETED"
    assert events[-1]["request_id"] == probe["handle"]["request_id"]


def _student_only(probe: dict) -> None:
    if probe["_mode"] != "student":
        pytest.skip("isolation: roster mode only")


def test_another_students_request_id_is_a_404_through_fal_client(probe: dict) -> None:
    _student_only(probe)
    foreign, unknown = probe["foreign"], probe["unknown"]
    assert {name: e and e["status_code"] for name, e in foreign.items()} == dict.fromkeys(
        ("status", "status_logs", "result", "cancel"), 404)
    # exactly what an id that does not exist gets: nothing tells that the job is there
    def masked(refusals: dict, request_id: str) -> dict:
        return {n: (e["status_code"], e["message"].replace(request_id, "<id>"))
                for n, e in refusals.items()}
    assert masked(foreign, probe["_foreign_id"]) == masked(unknown, "0" * 32)
    assert probe["_other"]["own_job"].get("error_type") != "request_cancelled"  # cancel refused


def test_another_student_gets_404_for_this_students_job_and_output(probe: dict) -> None:
    _student_only(probe)
    other = dict(probe["_other"])
    assert other.pop("own_job")["status"] == "COMPLETED"
    assert other == {"status": 404, "stream": 404, "result": 404, "cancel": 404, "image": 404}
    assert probe["_unauthenticated_download"] == 401  # the output needs its owner's token
