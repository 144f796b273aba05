"""Drive the unmodified official fal-client against a ``fluxnb serve --engine diffusers`` server.

Run in a fresh process with FAL_KEY, FAL_QUEUE_RUN_HOST and SSL_CERT_FILE set (fal-client reads
its hosts at import time: recipe A of fal-protocol.md section 11). Prints what it saw as JSON.
Usage: python diffusers_fal_probe.py IMAGE.png MASK.png LORA.safetensors
"""

import json
import sys

import fal_client

APP = "fal-ai/flux-lora/inpainting"


def main(image_path, mask_path, lora_path):
    args = {"prompt": "a red fox", "image_url": fal_client.encode_file(image_path),
            "mask_url": fal_client.encode_file(mask_path), "seed": 5, "output_format": "png",
            "num_inference_steps": 3, "num_images": 2, "loras": [{"path": lora_path, "scale": 0.8}]}
    updates = []

    def on_update(status):
        entry = {"type": type(status).__name__}
        if hasattr(status, "logs") and status.logs is not None:
            entry["logs"] = [line["message"] for line in status.logs]
        updates.append(entry)

    enqueued = []
    seen = {"subscribe": fal_client.subscribe(APP, arguments=args, with_logs=True,
                                              on_enqueue=enqueued.append, on_queue_update=on_update),
            "updates": updates}
    done = fal_client.status(APP, enqueued[0], with_logs=True)
    seen["subscribe_logs"] = [line["message"] for line in done.logs]
    handle = fal_client.submit(APP, arguments=dict(args, num_images=1, loras=[]))
    seen["get"] = handle.get()
    final = handle.status(with_logs=True)
    seen["final_logs"] = [line["message"] for line in final.logs]
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
