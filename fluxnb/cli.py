"""The ``fluxnb`` command: ``serve`` a fal-compatible queue, ``run`` one job, or run the ``demo``.

::

    fluxnb serve --host 127.0.0.1 --port 8000 --engine preview --workers 2
    fluxnb serve --engine diffusers --model black-forest-labs/FLUX.1-dev --device cuda
    fluxnb run --image photo.jpg --mask mask.png --prompt "a red fox" --out out/
    fluxnb demo --out fluxnb-demo/
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import schema
from ._version import __version__

__all__ = ["build_parser", "main"]

_F = schema.INPUT_FIELDS
_MODEL_FLAGS = ("model", "device", "dtype", "offload")


def _param_help(name: str) -> str:
    spec = _F[name]
    default = "" if spec.default is None else f"; default {spec.default}"
    return f"{spec.doc} Allowed: {spec.range_text()}{default}."


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", help=_param_help("prompt"))
    parser.add_argument("--steps", type=int, help=_param_help("num_inference_steps"))
    parser.add_argument("--guidance", type=float, help=_param_help("guidance_scale"))
    parser.add_argument("--strength", type=float, help=_param_help("strength"))
    parser.add_argument("--seed", type=int, help=_param_help("seed"))
    parser.add_argument("--num-images", type=int, help=_param_help("num_images"))
    parser.add_argument("--format", choices=_F["output_format"].choices,
                        help=_param_help("output_format"))
    parser.add_argument("--lora", action="append", default=[], metavar="PATH[@SCALE]",
                        help="a LoRA to apply (repeatable), e.g. --lora style.safetensors@0.8")
    parser.add_argument("--out", default=None, help="folder for the outputs (created if needed)")
    parser.add_argument("--base-url", default=None,
                        help="a fal-compatible server; default: fal.ai with FAL_KEY, else embedded")
    parser.add_argument("--timeout", type=float, default=None,
                        help="give up (and cancel the job) after this many seconds")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fluxnb`` command."""
    parser = argparse.ArgumentParser(prog="fluxnb", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fluxnb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a local fal-compatible queue server")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1; use 0.0.0.0 only on a trusted network)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--engine", default="preview",
                       help="preview (CPU, default), diffusers (real FLUX + LoRA; needs "
                            "fluxnb[diffusers]), null, or module:Factory")
    serve.add_argument("--model", default=None,
                       help="diffusers engine: a hub id (e.g. black-forest-labs/FLUX.1-dev) or a "
                            "local folder, loaded once with FluxInpaintPipeline.from_pretrained")
    serve.add_argument("--device", default=None,
                       help="diffusers engine: auto (CUDA when present, else CPU; default), cuda, "
                            "cuda:N or cpu")
    serve.add_argument("--dtype", default=None, choices=("bfloat16", "float16", "float32"),
                       help="diffusers engine: weight dtype (default bfloat16 on a GPU, float32 on CPU)")
    serve.add_argument("--offload", action="store_true", default=None,
                       help="diffusers engine: enable_model_cpu_offload(), for GPUs with ~24 GB")
    serve.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE",
                       help="option passed to the engine (repeatable), e.g. delay=0.05 for null")
    serve.add_argument("--workers", type=int, default=1, help="jobs run at the same time")
    serve.add_argument("--certfile", help="TLS certificate (PEM); serve HTTPS with --keyfile")
    serve.add_argument("--keyfile", help="TLS private key (PEM)")
    serve.add_argument("--key", default=None,
                       help="require 'Authorization: Key <key>' (default: $FLUXNB_SERVER_KEY, else open)")

    run = sub.add_parser("run", help="inpaint one image and write a before/mask/after picture")
    run.add_argument("--image", required=True, help="the image: a file path or an http(s) URL")
    run.add_argument("--mask", required=True, help="the mask: white = repaint, black = keep")
    _add_job_options(run)

    demo = sub.add_parser("demo", help="run on a photo shipped with matplotlib and a generated mask")
    _add_job_options(demo)
    return parser


def _engine_options(pairs: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"fluxnb serve: --engine-option must look like KEY=VALUE, got {pair!r}")
        try:
            options[name] = json.loads(raw)
        except json.JSONDecodeError:
            options[name] = raw
    return options


def _serve(args: argparse.Namespace) -> int:
    from .server import ServerConfig, serve

    if bool(args.certfile) != bool(args.keyfile):
        raise SystemExit("fluxnb serve: --certfile and --keyfile go together")
    options = _engine_options(args.engine_option)
    given = {name: getattr(args, name) for name in _MODEL_FLAGS if getattr(args, name) is not None}
    if given and args.engine in ("preview", "null"):
        flags = ", ".join("--" + name for name in given)
        raise SystemExit(f"fluxnb serve: {flags} are options of --engine diffusers, "
                         f"not of --engine {args.engine}")
    options.update(given)
    if args.engine == "diffusers" and not options.get("model"):
        raise SystemExit("fluxnb serve: --engine diffusers needs --model (a hub id such as "
                         "black-forest-labs/FLUX.1-dev, or a local folder)")
    config = ServerConfig(
        host=args.host, port=args.port, engine=args.engine, workers=args.workers,
        engine_options=options,
        key=args.key or os.environ.get("FLUXNB_SERVER_KEY") or None,
        certfile=args.certfile, keyfile=args.keyfile,
    )
    serve(config)
    return 0


def _parse_lora(text: str) -> dict[str, Any]:
    path, sep, scale = text.rpartition("@")
    if not sep or not path:
        return {"path": text}
    try:
        return {"path": path, "scale": float(scale)}
    except ValueError:
        return {"path": text}


def _job_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "prompt": args.prompt,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "strength": args.strength,
        "seed": args.seed,
        "num_images": args.num_images,
        "output_format": args.format,
        "loras": [_parse_lora(x) for x in args.lora] or None,
    }
    return {k: v for k, v in fields.items() if v is not None}


class _Progress:
    """Shows queue position and denoising steps on stderr while a job runs."""

    def __init__(self) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=1, desc="submitting", unit="step", file=sys.stderr, leave=True)
        self._desc = "submitting"

    def _describe(self, text: str) -> None:
        if text != self._desc:
            self._desc = text
            self._bar.set_description(text, refresh=False)

    def __call__(self, status: Any) -> None:
        from .protocol import Completed, InProgress, Queued, progress_from_logs

        if isinstance(status, Queued):
            self._describe(f"queued (position {status.position})")
        elif isinstance(status, InProgress):
            self._describe("running")
            progress = progress_from_logs(status.logs)
            if progress:
                done, total = progress
                self._bar.total = total
                self._bar.n = done
                self._bar.refresh()
        elif isinstance(status, Completed):
            self._describe("failed" if status.error else "done")
            if not status.error:
                self._bar.n = self._bar.total
            self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _caption(result: Any, fields: dict[str, Any]) -> str:
    from .schema import INPUT_FIELDS

    parts = []
    for name in ("num_inference_steps", "guidance_scale", "strength", "num_images"):
        value = fields.get(name, INPUT_FIELDS[name].default)
        parts.append(f"{INPUT_FIELDS[name].label.lower()}={value}")
    parts.append(f"seed={result.seed}")
    if result.engine:
        parts.append(f"engine={result.engine}")
    return "  ".join(parts)


def _run_job(image: Any, mask: Any, fields: dict[str, Any], args: argparse.Namespace,
             out_dir: Path, stem: str) -> int:
    from .backends import connect
    from .errors import FluxnbError
    from .figures import before_mask_after
    from .images import load_image, load_mask

    client = connect(args.base_url)
    progress = _Progress()
    try:
        with client:
            result = client.run(image_url=image, mask_url=mask, timeout=args.timeout,
                                on_update=progress, **fields)
            outputs = result.pil_images()
    except FluxnbError as exc:
        print(f"fluxnb: {exc}", file=sys.stderr)
        return 1
    finally:
        progress.close()
    if result.notice:
        print(f"fluxnb: {result.notice}", file=sys.stderr)
    tag = result.request_id[:8]
    record = {
        "inputs": fields,
        "image": str(image) if isinstance(image, (str, Path)) else "(in memory)",
        "mask": str(mask) if isinstance(mask, (str, Path)) else "(in memory)",
    }
    *written, _sidecar = result.save(out_dir, stem=f"{stem}-{tag}", extra=record)
    sheet = before_mask_after(load_image(image), load_mask(mask), outputs,
                              caption=_caption(result, fields))
    sheet_path = out_dir / f"{stem}-{tag}-before-mask-after.png"
    sheet.save(sheet_path)
    for path in written:
        print(f"output: {path}")
    print(f"before/mask/after: {sheet_path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    fields = _job_fields(args)
    if "prompt" not in fields:
        raise SystemExit("fluxnb run: --prompt is required")
    for name in ("image", "mask"):
        value = getattr(args, name)
        if not value.startswith(("http://", "https://", "data:")) and not Path(value).is_file():
            raise SystemExit(f"fluxnb run: --{name} {value!r} is not a file or an http(s) URL")
    out_dir = Path(args.out or "fluxnb-out")
    return _run_job(args.image, args.mask, fields, args, out_dir, Path(args.image).stem or "job")


def _demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_PROMPT, demo_inputs

    fields = _job_fields(args)
    fields.setdefault("prompt", DEMO_PROMPT)
    fields.setdefault("seed", 42)
    out_dir = Path(args.out or "fluxnb-demo")
    out_dir.mkdir(parents=True, exist_ok=True)
    image, mask = demo_inputs()
    image_path, mask_path = out_dir / "demo-image.png", out_dir / "demo-mask.png"
    image.save(image_path)
    mask.save(mask_path)
    return _run_job(str(image_path), str(mask_path), fields, args, out_dir, "demo")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fluxnb`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler = {"serve": _serve, "run": _run, "demo": _demo}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("fluxnb: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
