"""The ``fluxnb`` command: ``serve`` a fal-compatible queue, ``run`` one job, or run the ``demo``.

::

    fluxnb serve --host 127.0.0.1 --port 8000 --engine preview --workers 2
    fluxnb serve --engine diffusers --model black-forest-labs/FLUX.1-dev --device cuda
    fluxnb run --image photo.jpg --mask mask.png --prompt "a red fox" --out out/
    fluxnb demo --out fluxnb-demo/
    fluxnb class new --students 24 --out roster.csv
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import schema
from ._cli_class import (
    add_class_parser,
    add_serve_auth_options,
    add_serve_class_options,
    class_config,
    run_class,
    serve_auth,
)
from ._cli_output import Progress, error_text, interrupted_text
from ._version import __version__

__all__ = ["build_parser", "main"]

_F = schema.INPUT_FIELDS
_MODEL_FLAGS = ("model", "device", "dtype", "offload")

_DESCRIPTION = ("fluxnb: serve a fal-compatible inpainting queue, run one job against it\n"
                "(or fal.ai), or run the demo.")
_ENVIRONMENT = """\
environment:
  FAL_KEY          your fal.ai key: with it (and no --base-url) jobs go to fal.ai, billed
  FLUXNB_BASE_URL  a fal-compatible server to use when --base-url is not given
  FLUXNB_KEY       the key for that server (what --key gives; the variable keeps it out of
                   your shell history and of the process list)
  FLUXNB_JOURNAL   0 keeps runs out of the local run journal (fluxnb.journal())"""
_RUN_EXAMPLES = """\
examples:
  fluxnb run --image photo.jpg --mask mask.png --prompt "a red fox" --out out/
  fluxnb run --image photo.jpg --mask mask.png --prompt "a red fox" --steps 20 --seed 3 \\
      --base-url https://gpu-box.lab:8000
  FLUXNB_KEY=class-key fluxnb run --image in.png --mask m.png --prompt "moss" \\
      --base-url https://gpu-box.lab:8000"""
_SERVE_EXAMPLES = """\
examples:
  fluxnb serve                                     # preview engine on 127.0.0.1:8000
  fluxnb serve --engine null --engine-option delay=2
  fluxnb serve --engine diffusers --model black-forest-labs/FLUX.1-dev --device cuda"""
_TOP_EXAMPLES = f"""\
examples:
  fluxnb demo --out fluxnb-demo/
  fluxnb run --image photo.jpg --mask mask.png --prompt "a red fox" --out out/
  fluxnb serve --host 127.0.0.1 --port 8000 --engine preview --workers 2

{_ENVIRONMENT}"""


class _Parser(argparse.ArgumentParser):
    """argparse plus a did-you-mean for a mistyped option (argparse has one from 3.14 only)."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        tokens = list(sys.argv[1:] if args is None else args)
        if self._subparsers is None:  # a leaf (serve, run, demo): every --token is one of ours
            self._check_options(tokens)
        return super().parse_known_args(tokens, namespace)

    def _check_options(self, tokens: Sequence[str]) -> None:
        longs = sorted(s for s in self._option_string_actions if s.startswith("--"))
        for token in tokens:
            if token == "--":
                return
            name = token.split("=", 1)[0]  # only the name: the value may be a key
            if not name.startswith("--") or name in self._option_string_actions:
                continue
            if self.allow_abbrev and any(option.startswith(name) for option in longs):
                continue  # an abbreviation; argparse says when it is ambiguous
            close = difflib.get_close_matches(name, longs, n=1, cutoff=0.6)
            self.error(f"unrecognized option {name}" + (f"; did you mean {close[0]}?" if close else
                                                        f" (see {self.prog} --help)"))


def _usage_error(message: str) -> NoReturn:
    """Print one line and exit with status 2, as argparse does for a bad command line (the
    SystemExit carries the message too, for callers of :func:`main`)."""
    print(message, file=sys.stderr)
    exit_ = SystemExit(message)
    exit_.code = 2
    raise exit_


def _param_help(name: str) -> str:
    spec = _F[name]
    default = "" if spec.default is None else f"; default {spec.default}"
    return f"{spec.doc} Allowed: {spec.range_text()}{default}."


def _add_job_options(parser: argparse.ArgumentParser, *, prompt_required: bool) -> None:
    parser.add_argument("--prompt", required=prompt_required, help=_param_help("prompt"))
    parser.add_argument("--steps", type=int, help=_param_help("num_inference_steps"))
    parser.add_argument("--guidance", type=float, help=_param_help("guidance_scale"))
    parser.add_argument("--strength", type=float, help=_param_help("strength"))
    parser.add_argument("--seed", type=int, help=_param_help("seed"))
    parser.add_argument("--num-images", type=int, help=_param_help("num_images"))
    parser.add_argument("--format", choices=_F["output_format"].choices,
                        help=_param_help("output_format"))
    parser.add_argument("--safety-checker", action=argparse.BooleanOptionalAction, default=None,
                        help=_param_help("enable_safety_checker"))
    parser.add_argument("--lora", action="append", default=[], metavar="PATH[@SCALE]",
                        help="a LoRA to apply (repeatable), e.g. --lora style.safetensors@0.8")
    parser.add_argument("--out", default=None, help="folder for the outputs (created if needed)")
    parser.add_argument("--base-url", default=None,
                        help="a fal-compatible server (default: $FLUXNB_BASE_URL; else fal.ai when "
                             "FAL_KEY is set; else an embedded local server)")
    parser.add_argument("--key", default=None,
                        help="the key for --base-url's server (default: $FLUXNB_KEY; fal.ai reads "
                             "$FAL_KEY). Never printed; prefer the variable, as other users of the "
                             "machine can see a command line")
    parser.add_argument("--timeout", type=float, default=None,
                        help="give up (and cancel the job) after this many seconds")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fluxnb`` command.

    >>> build_parser().parse_args(["serve"]).port
    8000
    """
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="fluxnb", description=_DESCRIPTION, epilog=_TOP_EXAMPLES,
                     formatter_class=raw)
    parser.add_argument("--version", action="version", version=f"fluxnb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a local fal-compatible queue server",
                           description="Run a local fal-compatible queue server (Ctrl-C stops it).",
                           epilog=_SERVE_EXAMPLES, formatter_class=raw)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1; use 0.0.0.0 only on a trusted network)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default 8000)")
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
    serve.add_argument("--allow-private-fetch", action="store_true",
                       help="let image_url/mask_url downloads reach private, loopback and "
                            "link-local addresses (default: public addresses only)")
    add_serve_auth_options(serve)
    add_serve_class_options(serve)

    run = sub.add_parser("run", help="inpaint one image and write a before/mask/after picture",
                         description="Inpaint one image: the masked part is repainted from the "
                                     "prompt;\nwrites the outputs and a before/mask/after picture. "
                                     "Ctrl-C cancels the job\non the server.",
                         epilog=f"{_RUN_EXAMPLES}\n\n{_ENVIRONMENT}", formatter_class=raw)
    run.add_argument("--image", required=True, help="the image: a file path or an http(s) URL")
    run.add_argument("--mask", required=True, help="the mask: white = repaint, black = keep")
    run.add_argument("--params-from", metavar="IMAGE", default=None,
                     help="take the parameters saved in an output image fluxnb wrote (prompt, "
                          "seed, steps, LoRAs...); flags given override them")
    _add_job_options(run, prompt_required=False)

    demo = sub.add_parser("demo", help="run on a photo shipped with matplotlib and a generated mask",
                          epilog=_ENVIRONMENT, formatter_class=raw)
    _add_job_options(demo, prompt_required=False)
    add_class_parser(sub)
    return parser


def _engine_options(pairs: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            _usage_error(f"fluxnb serve: --engine-option must look like KEY=VALUE, got {pair!r}")
        try:
            options[name] = json.loads(raw)
        except json.JSONDecodeError:
            options[name] = raw
    return options


def _check_engine(name: str) -> None:
    """One clear line and exit 2 when the engine cannot be made: an unknown name, a
    ``module:Factory`` that does not import, or ``diffusers`` without torch and diffusers."""
    from .server.engines import available_engines

    known = available_engines()
    if ":" in name:
        module = name.partition(":")[0]
        try:
            importlib.import_module(module)
        except Exception as exc:  # an ImportError, or whatever the module raised on import
            _usage_error(f"fluxnb serve: --engine {name}: cannot import {module} "
                         f"({type(exc).__name__}: {exc})")
        return
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        _usage_error(f"fluxnb serve: unknown engine {name!r}{hint} (available: {', '.join(known)}, "
                     "or module:Factory)")
    if name == "diffusers":
        for module in ("torch", "diffusers"):
            try:
                importlib.import_module(module)
            except Exception as exc:
                _usage_error(f"fluxnb serve: --engine diffusers needs {module}, which cannot be "
                             f"imported ({type(exc).__name__}: {exc}); install it with "
                             "pip install 'fluxnb[diffusers]'")


def _serve(args: argparse.Namespace) -> int:
    from .server import ServerConfig, serve

    if bool(args.certfile) != bool(args.keyfile):
        _usage_error("fluxnb serve: --certfile and --keyfile go together")
    _check_engine(args.engine)
    options = _engine_options(args.engine_option)
    given = {name: getattr(args, name) for name in _MODEL_FLAGS if getattr(args, name) is not None}
    if given and args.engine in ("preview", "null"):
        flags = ", ".join("--" + name for name in given)
        _usage_error(f"fluxnb serve: {flags} are options of --engine diffusers, "
                     f"not of --engine {args.engine}")
    options.update(given)
    if args.engine == "diffusers" and not options.get("model"):
        _usage_error("fluxnb serve: --engine diffusers needs --model (a hub id such as "
                     "black-forest-labs/FLUX.1-dev, or a local folder)")
    key, roster = serve_auth(args, _usage_error)
    extra = class_config(args, _usage_error)
    config = ServerConfig(
        host=args.host, port=args.port, engine=args.engine, workers=args.workers,
        engine_options=options, key=key, roster=roster,
        certfile=args.certfile, keyfile=args.keyfile,
        allow_private_fetch=args.allow_private_fetch, **extra,
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
        "enable_safety_checker": args.safety_checker,
        "loras": [_parse_lora(x) for x in args.lora] or None,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _validate(command: str, fields: dict[str, Any], args: argparse.Namespace) -> None:
    """Check the job's options against the schema before any server starts (exit 2 if bad)."""
    from .errors import ValidationError

    if args.key is not None and not (args.base_url or os.environ.get("FLUXNB_BASE_URL")):
        _usage_error(f"fluxnb {command}: --key is the key of the server that --base-url (or "
                     "$FLUXNB_BASE_URL) names, and none is given; for fal.ai set FAL_KEY instead")
    placeholder = "https://placeholder.invalid/input.png"  # the files are checked on their own
    try:
        schema.validate_input({**fields, "image_url": placeholder, "mask_url": placeholder})
    except ValidationError as exc:
        _usage_error(f"fluxnb {command}: {error_text(exc)}")


def _caption(result: Any, fields: dict[str, Any]) -> str:
    from .schema import INPUT_FIELDS, short_name

    parts = []
    for name in ("num_inference_steps", "guidance_scale", "strength", "num_images"):
        value = fields.get(name, INPUT_FIELDS[name].default)
        parts.append(f"{short_name(name)}={value}")
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

    try:
        client = connect(args.base_url, key=args.key)
    except FluxnbError as exc:  # e.g. an unusable key: the error names where it came from
        print(f"fluxnb: {error_text(exc)}", file=sys.stderr)
        return 2
    from .client.journal import note_outputs, recording

    progress = Progress(fields)
    try:  # recorded in the run journal (fluxnb.journal()) unless FLUXNB_JOURNAL=0
        with client, recording(enabled=True, origin="cli", image=image, mask=mask):
            result = client.run(image_url=image, mask_url=mask, timeout=args.timeout,
                                on_update=progress, on_enqueue=progress.enqueued, **fields)
            outputs = result.pil_images()
    except FluxnbError as exc:
        progress.close()  # first: an error is never printed inside a half-drawn bar
        print(f"fluxnb: {error_text(exc)}", file=sys.stderr)
        return 1
    finally:
        progress.close()
    if result.notice:
        print(f"fluxnb: {result.notice}", file=sys.stderr)
    tag = (result.request_id or "result")[:8]
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
    note_outputs(result.request_id, [*written, sheet_path])
    for path in written:
        print(f"output: {path}")
    print(f"before/mask/after: {sheet_path}")
    return 0


def _params_from(args: argparse.Namespace) -> dict[str, Any]:
    """The parameters saved in ``--params-from IMAGE`` (none without it); exit 2 if unreadable."""
    if args.params_from is None:
        if args.prompt is None:
            _usage_error("fluxnb run: --prompt is required (or --params-from IMAGE, an output "
                         "image whose saved parameters include the prompt)")
        return {}
    from .params_meta import MetadataError, read_params

    try:
        return read_params(args.params_from)
    except MetadataError as exc:
        _usage_error(f"fluxnb run: --params-from: {exc}")
    except OSError as exc:
        _usage_error(f"fluxnb run: --params-from {args.params_from!r}: {exc.strerror or exc}")


def _run(args: argparse.Namespace) -> int:
    fields = {**_params_from(args), **_job_fields(args)}
    for name in ("image", "mask"):
        value = getattr(args, name)
        if not value.startswith(("http://", "https://", "data:")) and not Path(value).is_file():
            _usage_error(f"fluxnb run: --{name} {value!r} is not a file or an http(s) URL")
    _validate("run", fields, args)
    out_dir = Path(args.out or "fluxnb-out")
    return _run_job(args.image, args.mask, fields, args, out_dir, Path(args.image).stem or "job")


def _demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_PROMPT, demo_inputs

    fields = _job_fields(args)
    fields.setdefault("prompt", DEMO_PROMPT)
    fields.setdefault("seed", 42)
    fields.setdefault("strength", 1.0)  # the whole fill: the picture shows what the engine paints
    _validate("demo", fields, args)
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
    handler = {"serve": _serve, "run": _run, "demo": _demo, "class": run_class}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt as exc:
        print(f"fluxnb: {interrupted_text(exc)}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
