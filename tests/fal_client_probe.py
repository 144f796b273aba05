"""Drive the unmodified official fal-client against a fluxnb server; print what it saw as JSON.

Run in a fresh process with FAL_KEY, FAL_QUEUE_RUN_HOST, FAL_RUN_HOST and SSL_CERT_FILE already
set (fal-client reads its hosts at import time: recipe A of fal-protocol.md section 11).
With FLUXNB_PROBE_FOREIGN_ID (another person's request id on a roster server) it also records
what status, result and cancel of that id raise, next to those of an id that does not exist.
Usage: python fal_client_probe.py IMAGE.png MASK.png
"""

import json
import os
import sys
from pathlib import Path

import fal_client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: find tests/
from tests.support import eventually  # noqa: E402

APP = "fal-ai/flux-lora/inpainting"


def _status_json(status):
    name = type(status).__name__
    out = {"type": name}
    if name == "Queued":
        out["position"] = status.position
    if hasattr(status, "logs"):
        out["logs"] = None if status.logs is None else [dict(x) for x in status.logs]
    if name == "Completed":
        out["metrics"] = status.metrics
        out["error"] = getattr(status, "error", None)
        out["error_type"] = getattr(status, "error_type", None)
    return out


def main(image_path, mask_path):
    args = {"prompt": "a red fox", "image_url": fal_client.encode_file(image_path),
            "mask_url": fal_client.encode_file(mask_path), "seed": 7, "output_format": "png"}
    seen = {}

    # subscribe: submit, poll with logs, fetch the result
    updates, enqueued = [], []
    seen["subscribe"] = fal_client.subscribe(
        APP, arguments=args, with_logs=True, on_enqueue=enqueued.append,
        on_queue_update=lambda s: updates.append(_status_json(s)))
    seen["subscribe_enqueued"] = enqueued
    seen["subscribe_updates"] = updates

    # submit + status with and without logs + result (twice) + get_handle equality
    handle = fal_client.submit(APP, arguments=args)
    seen["handle"] = {"request_id": handle.request_id, "response_url": handle.response_url,
                      "status_url": handle.status_url, "cancel_url": handle.cancel_url}
    seen["status_no_logs"] = _status_json(handle.status(with_logs=False))
    seen["status_logs"] = _status_json(handle.status(with_logs=True))
    seen["get"] = handle.get()
    seen["result_again"] = fal_client.result(APP, handle.request_id)
    final = handle.status(with_logs=True)
    seen["final_with_logs"] = _status_json(final)
    seen["final_no_logs"] = _status_json(handle.status(with_logs=False))
    again = fal_client.sync_client.get_handle(APP, handle.request_id)
    seen["get_handle"] = {"request_id": again.request_id, "response_url": again.response_url,
                          "status_url": again.status_url, "cancel_url": again.cancel_url}

    # cancel: a blocker occupies the single worker, the second job is cancelled while queued
    blocker = fal_client.submit(APP, arguments=dict(args, num_images=4))
    victim = fal_client.submit(APP, arguments=args)
    seen["victim_before_cancel"] = _status_json(victim.status())
    fal_client.cancel(APP, victim.request_id)

    def cancelled_status():
        status = victim.status(with_logs=True)
        return status if type(status).__name__ == "Completed" else None

    after = eventually(cancelled_status, 10, "the cancelled job never completed")
    seen["victim_after_cancel"] = _status_json(after)
    try:
        fal_client.result(APP, victim.request_id)
        seen["victim_result_error"] = None
    except fal_client.FalClientHTTPError as exc:
        seen["victim_result_error"] = {"status_code": exc.status_code, "message": str(exc)}
    blocker.get()
    try:
        blocker.cancel()
        seen["cancel_completed"] = None
    except fal_client.FalClientHTTPError as exc:
        seen["cancel_completed"] = {"status_code": exc.status_code, "message": str(exc)}

    # run(): fal's synchronous API, at FAL_RUN_HOST=127.0.0.1:P/_fluxnb/run
    seen["run"] = fal_client.run(APP, arguments=args)

    # a validation error surfaces as FalClientHTTPError 422 at submit
    try:
        fal_client.submit(APP, arguments=dict(args, num_inference_steps=99))
        seen["invalid"] = None
    except fal_client.FalClientHTTPError as exc:
        seen["invalid"] = {"status_code": exc.status_code, "message": str(exc)}
    foreign = os.environ.get("FLUXNB_PROBE_FOREIGN_ID")
    if foreign:
        seen["foreign"] = _refusals(foreign)
        seen["unknown"] = _refusals("0" * 32)
    print(json.dumps(seen))


def _refusals(request_id):
    """What each of fal-client's calls on ``request_id`` raises (status code and text)."""
    calls = {"status": lambda: fal_client.status(APP, request_id),
             "status_logs": lambda: fal_client.status(APP, request_id, with_logs=True),
             "result": lambda: fal_client.result(APP, request_id),
             "cancel": lambda: fal_client.cancel(APP, request_id)}
    out = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = None
        except fal_client.FalClientHTTPError as exc:
            out[name] = {"status_code": exc.status_code, "message": str(exc)}
    return out


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
