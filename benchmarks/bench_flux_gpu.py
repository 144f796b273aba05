"""Time a 28-step 1024x1024 FLUX.1-dev inpaint on a CUDA GPU, with random weights (no download).

    python benchmarks/bench_flux_gpu.py                    # full FLUX.1-dev size, needs ~40 GB GPU
    python benchmarks/bench_flux_gpu.py --json out.json    # also write the numbers as JSON
    python benchmarks/bench_flux_gpu.py --tiny --device cpu --size 64 --steps 4   # smoke test

The pipeline has FLUX.1-dev's exact architecture (transformer: 19 double + 38 single blocks,
24 heads x 128, joint_attention_dim 4096, pooled 768, in_channels 64, guidance embeddings; the
FLUX VAE; a T5-XXL-sized encoder and a CLIP-L-sized encoder with tokenizers made in code), built
directly on the GPU in bfloat16 with random weights. Compute per step equals the real model's,
so timings and memory transfer; the pictures are noise. It times ``FluxInpaintPipeline`` at
strength 0.85 and 1.0 (one warm-up, then the median of ``--runs``) and the same request through
fluxnb's ``DiffusersEngine`` (so the engine's overhead is visible), and reports seconds per
image, denoising steps per second and peak GPU memory.

Needs torch with CUDA, diffusers 0.42.1, transformers 5.x (the ``fluxnb[diffusers]`` pins) and
this repository on the path (run it from the repository root).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["build_full_pipeline", "main", "make_inputs"]

PROMPT = "a red fox sitting in tall grass, golden hour, photograph"


def make_inputs(size: int) -> tuple[Image.Image, Image.Image]:
    """A gradient + noise image and a centred square mask covering a quarter of it."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    arr = np.stack([x * 255 // max(1, size - 1), y * 255 // max(1, size - 1),
                    ((x // 32 + y // 32) % 2) * 200], axis=-1).astype(np.int16)
    arr += rng.integers(-8, 9, arr.shape)
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    return image, Image.fromarray(mask, "L")


def build_full_pipeline(device: str, dtype: Any) -> Any:
    """FluxInpaintPipeline with FLUX.1-dev's architecture and random weights, built on ``device``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxInpaintPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from tests.tinyflux import build_tokenizers

    clip_tok, t5_tok = build_tokenizers()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)   # parameters are created in bf16 directly (no fp32 detour)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            transformer = FluxTransformer2DModel(
                patch_size=1, in_channels=64, out_channels=None, num_layers=19,
                num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=[16, 56, 56])
            vae = AutoencoderKL(
                in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu", norm_num_groups=32,
                sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
                use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True)
            t5 = T5EncoderModel(T5Config(
                vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                relative_attention_max_distance=128, dropout_rate=0.0, layer_norm_epsilon=1e-6,
                is_encoder_decoder=False, use_cache=False))
            clip = CLIPTextModel(CLIPTextConfig(
                vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                num_hidden_layers=12, max_position_embeddings=77, projection_dim=768,
                hidden_act="quick_gelu", bos_token_id=0, eos_token_id=1, pad_token_id=1))
    finally:
        torch.set_default_dtype(previous)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
        max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxInpaintPipeline(scheduler=scheduler, text_encoder=clip, text_encoder_2=t5,
                               tokenizer=clip_tok, tokenizer_2=t5_tok, transformer=transformer,
                               vae=vae)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class _StepClock:
    """``callback_on_step_end`` that synchronises and timestamps every denoising step."""

    def __init__(self, sync: Any) -> None:
        self.sync = sync
        self.stamps: list[float] = []

    def __call__(self, pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.sync()
        self.stamps.append(time.perf_counter())
        return kwargs

    def steps_per_second(self) -> float | None:
        if len(self.stamps) < 2:
            return None
        return (len(self.stamps) - 1) / (self.stamps[-1] - self.stamps[0])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints a table and (with ``--json``) writes the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--strengths", default="0.85,1.0")
    parser.add_argument("--tiny", action="store_true",
                        help="the tiny test model instead of FLUX.1-dev's size (smoke test)")
    parser.add_argument("--offload", action="store_true",
                        help="time with enable_model_cpu_offload() (as --offload on 24 GB cards)")
    parser.add_argument("--no-engine", action="store_true", help="skip the DiffusersEngine timing")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_flux_gpu: no CUDA GPU is visible to torch "
              f"(torch {torch.__version__}, cuda build {torch.version.cuda}); this benchmark "
              "needs one. Use --tiny --device cpu for a smoke test of the code path.",
              file=sys.stderr)
        return 2
    from tests.tinyflux import build_tiny_pipeline, import_diffusers

    import_diffusers()
    from fluxnb.schema import validate_input
    from fluxnb.server.engines import EngineRequest
    from fluxnb.server.engines.flux_diffusers import DiffusersEngine
    from fluxnb.server.engines.testing import RecordingContext

    import_s = time.perf_counter() - t0
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    t = time.perf_counter()
    if args.tiny:
        pipe = build_tiny_pipeline().to(args.device, dtype)
        pipe.set_progress_bar_config(disable=True)
    else:
        pipe = build_full_pipeline(args.device, dtype)
    if args.offload:
        pipe.enable_model_cpu_offload(device=args.device)   # parts move to the GPU as they run
    sync()
    build_s = time.perf_counter() - t
    params = {name: sum(p.numel() for p in getattr(pipe, name).parameters())
              for name in ("transformer", "text_encoder_2", "text_encoder", "vae")}
    weights_gib = torch.cuda.memory_allocated(args.device) / 1024**3 if cuda else None
    image, mask = make_inputs(args.size)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""),
        "model": "tiny test model" if args.tiny else "FLUX.1-dev architecture, random weights",
        "offload": args.offload,
        "params_billion": {k: round(v / 1e9, 4) for k, v in params.items()},
        "size": args.size, "steps": args.steps, "runs": args.runs,
        "import_s": round(import_s, 2), "build_s": round(build_s, 2),
        "weights_gib": None if weights_gib is None else round(weights_gib, 2),
        "pipeline": {}, "engine": {},
    }
    print(json.dumps({k: v for k, v in report.items() if k not in ("pipeline", "engine")}),
          flush=True)

    def once(strength: float, seed: int) -> tuple[float, int, float | None]:
        clock = _StepClock(sync)
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(prompt=PROMPT, image=image, mask_image=mask, height=args.size, width=args.size,
                 strength=strength, num_inference_steps=args.steps, guidance_scale=3.5,
                 generator=torch.Generator("cpu").manual_seed(seed), max_sequence_length=512,
                 callback_on_step_end=clock)
        sync()
        return time.perf_counter() - start, len(clock.stamps), clock.steps_per_second()

    strengths = [float(s) for s in args.strengths.split(",")]
    warm = once(strengths[0], 0)[0]
    report["warmup_s"] = round(warm, 3)
    for strength in strengths:
        if cuda:
            torch.cuda.reset_peak_memory_stats(args.device)
        runs = [once(strength, 1 + k) for k in range(args.runs)]
        seconds = statistics.median(r[0] for r in runs)
        rates = [r[2] for r in runs if r[2] is not None]
        report["pipeline"][str(strength)] = {
            "denoising_steps": runs[0][1], "seconds_per_image": round(seconds, 3),
            "all_seconds": [round(r[0], 3) for r in runs],
            "steps_per_s": round(statistics.median(rates), 3) if rates else None,
            "peak_gpu_gib": (round(torch.cuda.max_memory_allocated(args.device) / 1024**3, 2)
                             if cuda else None)}
        print(f"pipeline strength {strength}: {json.dumps(report['pipeline'][str(strength)])}",
              flush=True)

    if not args.no_engine:
        engine = DiffusersEngine(model=report["model"], device=args.device,
                                 dtype="bfloat16" if cuda else "float32", offload=args.offload)
        engine.pipe = pipe   # already built: load() is a no-op when a pipeline is set
        for strength in strengths:
            body = validate_input({"prompt": PROMPT, "image_url": "data:,", "mask_url": "data:,",
                                   "num_inference_steps": args.steps, "strength": strength},
                                  fill_defaults=True)
            seconds_list = []
            for k in range(args.runs):
                request = EngineRequest(image=image, mask=mask, params=body, seed=1 + k)
                sync()
                start = time.perf_counter()
                out = engine.run(request, RecordingContext())
                sync()
                seconds_list.append(time.perf_counter() - start)
            assert out.images[0].size == (args.size, args.size)
            seconds = statistics.median(seconds_list)
            base = report["pipeline"][str(strength)]["seconds_per_image"]
            report["engine"][str(strength)] = {
                "seconds_per_image": round(seconds, 3),
                "all_seconds": [round(s, 3) for s in seconds_list],
                "overhead_s": round(seconds - base, 3), "timings": out.timings}
            print(f"engine strength {strength}: {json.dumps(report['engine'][str(strength)])}",
                  flush=True)

    print("\nsummary")
    for strength, row in report["pipeline"].items():
        eng = report["engine"].get(strength, {})
        print(f"  {args.size}x{args.size}, {args.steps} steps, strength {strength}: "
              f"{row['denoising_steps']} denoising steps, {row['seconds_per_image']} s/image "
              f"(pipeline), {eng.get('seconds_per_image', '-')} s/image (engine), "
              f"{row['steps_per_s']} steps/s, peak {row['peak_gpu_gib']} GiB")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
