"""The ``diffusers`` engine: real FLUX + LoRA inpainting with ``FluxInpaintPipeline``.

``fluxnb serve --engine diffusers --model black-forest-labs/FLUX.1-dev`` loads the pipeline
once at start-up (``FluxInpaintPipeline.from_pretrained(model)``, a hub id or a local folder) and
serves every job with it, one job at a time. torch and diffusers are imported only when the
engine loads, so ``import fluxnb`` never pays for them. Needs ``pip install "fluxnb[diffusers]"``.

Parameter mapping:

- ``prompt`` -> encoded once per job (CLIP + T5), reused for every image of the job.
- ``image_url`` / ``mask_url`` -> fetched and validated by the server; white (>= 128) is repainted.
- the output has the input's size: ``height``/``width`` are always passed; a side that is not a
  multiple of 16 is padded (reflected) up to the next multiple for the pipeline and the output is
  cropped back (a log line says so).
- ``num_inference_steps``, ``guidance_scale``, ``strength`` -> the pipeline's own arguments; an
  inpaint at strength ``s`` runs ``steps - int(steps - steps * s)`` denoising steps, and each one
  is logged as ``step k/n`` (a cancel takes effect between steps).
- ``seed`` -> image ``i`` uses ``torch.Generator("cpu").manual_seed(seed + i)`` (as the preview
  engine uses ``seed + i``), so every image is reproducible alone: image 1 of seed 7 equals
  image 0 of seed 8. CPU generators give the same starting noise on every device.
- ``num_images`` -> that many images, one after another.
- ``loras: [{path, scale}]`` -> each distinct source is loaded once as a named peft adapter and
  kept; a job activates exactly its adapters with exactly its scales (``set_adapters``); an item
  at scale 0 is left out, and a job without LoRAs runs with LoRAs disabled (the base weights).
  ``path`` follows the server's rules (:mod:`fluxnb.server.loras`): a ``.safetensors`` file under ``lora_dir``
  (``--lora-dir``), an http(s) URL (downloaded through the fetch guard into a size-capped LRU
  cache, before the job takes the GPU) or, with ``allow_hub_loras``, a hub repo. Only
  safetensors files are loaded, never a pickle.
- ``enable_safety_checker`` -> FLUX ships no safety checker; nothing is checked, a log line says
  so and ``has_nsfw_concepts`` is always false.
- a small mask in a big image -> only a padded crop around it is inpainted, at about
  ``working_size``² px, and stitched back (:func:`~fluxnb.server.engines.compose.plan_crop`).

The pure helpers live in :mod:`~fluxnb.server.engines.flux_support`, the LoRA download in
:mod:`~fluxnb.server.engines.lora_download`.

>>> from fluxnb.server.engines import create_engine
>>> engine = create_engine("diffusers", model="black-forest-labs/FLUX.1-dev", device="cpu")
>>> engine.info()["dtype"]
'float32'
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

from PIL import Image

from ..inputs import FetchPolicy
from ..loras import LoraRefused, LoraRules, LoraSource, is_safetensors
from .base import Engine, EngineInputError, EngineOutput, EngineRequest, JobContext
from .compose import CropSettings, crop_pair, default_feather, plan_crop, stitch
from .flux_support import (
    active_loras,
    adapter_name,
    default_lora_cache,
    denoising_steps,
    hub_offline,
    import_diffusers,
    pad_pair,
    resolve_device,
    resolve_dtype,
)
from .lora_download import DownloadLimits, LoraCache, download_lora, hub_url

__all__ = ["SAFETY_NOTICE", "DiffusersEngine"]

#: What the engine says about ``enable_safety_checker``.
SAFETY_NOTICE = ("enable_safety_checker: FLUX ships no safety checker, so nothing was checked; "
                 "has_nsfw_concepts is always false")



class DiffusersEngine(Engine):
    """FLUX inpainting through diffusers' ``FluxInpaintPipeline``, with LoRAs.

    Options (``fluxnb serve --engine diffusers --model M [--device D] [--dtype T] [--offload]``,
    or ``ServerConfig(engine="diffusers", engine_options={...})``):

    - ``model``: hub id or local folder in diffusers layout (required).
    - ``device``: ``auto`` (CUDA when present, else CPU), ``cuda``, ``cuda:N``, ``cpu`` or ``mps``.
    - ``dtype``: ``bfloat16`` | ``float16`` | ``float32``; default bfloat16 on a GPU, float32 on CPU.
    - ``offload``: ``enable_model_cpu_offload()``; each part moves to the GPU only while it
      runs (for 24 GB cards).
    - ``lora_cache``: folder for downloaded LoRAs (default ``$FLUXNB_LORA_CACHE`` or
      ``~/.cache/fluxnb/loras``), at most ``lora_cache_bytes`` (LRU); ``max_loras``: adapters
      kept loaded (default 8).
    - ``lora_dir`` / ``allow_hub_loras``: the LoRA rules (``--lora-dir``, ``--allow-hub-loras``);
      ``allow_private_fetch`` / ``fetch_allow_loopback``: the fetch guard of LoRA URLs;
      ``lora_max_bytes``, ``lora_deadline`` (s), ``fetch_timeout`` (s per operation).
    - ``max_sequence_length``: T5 tokens (default 512, as FLUX.1-dev).
    - ``crop`` (default true), ``crop_padding`` (px around the mask, default 32; < 0: off),
      ``crop_threshold`` (default 0.5), ``working_size`` (px, default 1024): crop-and-stitch.

    ``max_concurrency`` is None: a job downloads its LoRAs before it takes the engine's own
    device lock, so one job downloads while another runs; the pipeline runs one job at a time.

    >>> DiffusersEngine(model="some/model", device="cpu", lora_dir="/srv/loras").rules.lora_dir
    '/srv/loras'
    """

    name = "diffusers"
    description = "FLUX inpainting through diffusers (FluxInpaintPipeline), with LoRAs"
    generative = True
    max_concurrency = None   # downloads overlap; the device lock keeps one job on the GPU

    def __init__(self, model: str | None = None, device: str = "auto", dtype: str | None = None,
                 offload: bool = False, lora_cache: str | None = None, max_loras: int = 8,
                 max_sequence_length: int = 512, lora_dir: str | None = None,
                 allow_hub_loras: bool = False, allow_private_fetch: bool = False,
                 fetch_allow_loopback: bool = False, lora_max_bytes: int = 2 * 1024**3,
                 lora_cache_bytes: int = 8 * 1024**3, lora_deadline: float = 300.0,
                 fetch_timeout: float = 20.0, crop: bool = True, crop_padding: int = 32,
                 crop_threshold: float = 0.5, working_size: int = 1024):
        if not model:
            raise ValueError("the diffusers engine needs a model: a hub id such as "
                             "black-forest-labs/FLUX.1-dev or a local folder (--model)")
        if max_loras < 1:
            raise ValueError(f"max_loras must be >= 1, not {max_loras}")
        self.model = str(model)
        self.requested_device = str(device)
        self.device = resolve_device(self.requested_device, _cuda_available(self.requested_device))
        self.dtype = resolve_dtype(dtype, self.device)
        self.offload = bool(offload)
        if self.offload and not self.device.startswith("cuda"):
            raise ValueError(f"offload needs a CUDA device (device is {self.device!r})")
        self.lora_cache = Path(lora_cache).expanduser() if lora_cache else default_lora_cache()
        self.rules = LoraRules(lora_dir=None if lora_dir is None else str(lora_dir),
                               allow_hub=bool(allow_hub_loras))
        self.fetch_policy = FetchPolicy(allow_private=bool(allow_private_fetch),
                                        allow_loopback=bool(fetch_allow_loopback))
        self.download_limits = DownloadLimits(max_bytes=int(lora_max_bytes),
                                              timeout=float(fetch_timeout),
                                              deadline=float(lora_deadline))
        self.downloads = LoraCache(self.lora_cache, int(lora_cache_bytes))
        self.max_loras = int(max_loras)
        self.max_sequence_length = int(max_sequence_length)
        self.crop = CropSettings(crop, int(crop_padding), float(crop_threshold), int(working_size))
        self.pipe: Any = None
        self.load_seconds: float | None = None
        self._lock = threading.Lock()
        self._adapters: OrderedDict[str, str] = OrderedDict()   # source key -> adapter name

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Import torch + diffusers and load the pipeline onto the device (once)."""
        if self.pipe is not None:
            return
        t0 = time.perf_counter()
        torch, pipeline_cls = import_diffusers()
        try:
            pipe = pipeline_cls.from_pretrained(self.model, dtype=getattr(torch, self.dtype))
        except Exception as exc:
            raise RuntimeError(
                f"could not load FluxInpaintPipeline from {self.model!r}: {type(exc).__name__}: "
                f"{exc}. A hub id needs the hub (and, for the gated FLUX.1-dev, an accepted "
                "licence and HF_TOKEN); a local folder must hold a diffusers-format pipeline."
            ) from exc
        if self.offload:
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        tokenizer_2 = getattr(pipe, "tokenizer_2", None)
        limit = getattr(tokenizer_2, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < self.max_sequence_length:
            self.max_sequence_length = limit
        self.pipe = pipe
        self.load_seconds = round(time.perf_counter() - t0, 3)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "model": self.model, "device": self.device, "dtype": self.dtype,
                "offload": self.offload, "loaded": self.pipe is not None,
                "load_seconds": self.load_seconds, "loras_loaded": len(self._adapters),
                "safety_checker": SAFETY_NOTICE}

    # -- one job ---------------------------------------------------------------------------

    def run(self, request: EngineRequest, ctx: JobContext) -> EngineOutput:
        # LoRA files are checked and downloaded before the device lock: they never hold the GPU
        t = time.perf_counter()
        local = self._fetch_loras(active_loras(request.loras), ctx)   # scale 0: left out
        fetched = round(time.perf_counter() - t, 6)
        ctx.check_cancelled()
        with self._lock:   # never two jobs on the device, whatever the server's worker count
            output = self._run(request, ctx, local)
        output.timings["lora_downloads"] = fetched
        return output

    def _run(self, request: EngineRequest, ctx: JobContext,
             local: list[tuple[str, Path]]) -> EngineOutput:
        if self.pipe is None:
            self.load()
        import torch

        pipe = self.pipe
        timings: dict[str, float] = {}
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)   # the peak reported is this job's
        n, steps, strength = request.num_images, request.steps, request.strength
        width, height = request.image.size
        ctx.log(f"diffusers: model {self.model} on {self.device} ({self.dtype}"
                f"{', offload' if self.offload else ''})")

        t = time.perf_counter()
        applied = self._apply_loras(active_loras(request.loras), local, ctx)
        timings["loras"] = round(time.perf_counter() - t, 6)
        ctx.check_cancelled()

        image, mask = request.image.convert("RGB"), request.mask.convert("L")
        band = self.paste_back_feather
        band = default_feather(width, height) if band is None else band
        plan = plan_crop(mask, self.crop, band)
        if plan is not None:
            image, mask = crop_pair(image, mask, plan)
            ctx.log(plan.describe())
        work_size = image.size
        image, mask, padded = pad_pair(image, mask)
        run_w, run_h = image.size
        if padded:
            ctx.log(f"size {work_size[0]}x{work_size[1]} is not a multiple of 16: padded "
                    f"(reflected) to {run_w}x{run_h} for the pipeline; the output is cropped "
                    f"back to {work_size[0]}x{work_size[1]}")
        expected = denoising_steps(steps, strength)
        ctx.log(f"denoising {expected} of {steps} steps at strength {strength:g}, "
                f"guidance {request.guidance_scale:g}, {n} image(s), seed {request.seed}"
                + (" (+i for image i)" if n > 1 else ""))
        if request.params.get("enable_safety_checker", True):
            ctx.log(SAFETY_NOTICE)

        t = time.perf_counter()
        with torch.inference_mode():
            prompt_embeds, pooled, _ = pipe.encode_prompt(
                prompt=request.prompt, prompt_2=None, device=pipe._execution_device,
                num_images_per_prompt=1, max_sequence_length=self.max_sequence_length)
        timings["encode_prompt"] = round(time.perf_counter() - t, 6)

        images, denoise = self._denoise(request, image, mask, (prompt_embeds, pooled), expected,
                                        ctx, work_size)
        if plan is not None:   # a hard paste for the server's paste-back, or blended in itself
            images = [stitch(request.image, img, plan, None if self.paste_back else band)
                      for img in images]
        timings["denoise_and_decode"] = round(denoise, 6)
        memory: dict[str, Any] = {}
        if self.device.startswith("cuda"):
            memory["peak_gpu_memory_gib"] = round(
                torch.cuda.max_memory_allocated(self.device) / 1024**3, 3)
        return EngineOutput(
            images=images, has_nsfw_concepts=[False] * n, timings=timings,
            extra={"engine": self.name, "model": self.model, "device": self.device,
                   "dtype": self.dtype, "num_inference_steps": steps,
                   "denoising_steps": expected, "strength": strength,
                   "guidance_scale": request.guidance_scale, "loras": applied,
                   "safety_checker": SAFETY_NOTICE,
                   **memory, **({"crop": plan.info()} if plan is not None else {}),
                   **({"padded_to": {"width": run_w, "height": run_h}} if padded else {})},
        )

    def _denoise(self, request: EngineRequest, image: Image.Image, mask: Image.Image,
                 embeds: tuple[Any, Any], expected: int, ctx: JobContext,
                 size: tuple[int, int]) -> tuple[list[Image.Image], float]:
        """The pipeline once per image (seed + i), cropped back to ``size`` (before padding);
        the images and the seconds spent denoising and decoding."""
        import torch

        pipe, (prompt_embeds, pooled) = self.pipe, embeds
        n, (width, height), (run_w, run_h) = request.num_images, size, image.size
        images: list[Image.Image] = []
        denoise = 0.0
        for i in range(n):
            ctx.check_cancelled()
            generator = torch.Generator("cpu").manual_seed(request.seed + i)

            def on_step(p: Any, k: int, _t: Any, kwargs: dict[str, Any], i: int = i) -> dict[str, Any]:
                total = int(getattr(p, "_num_timesteps", 0) or expected)
                ctx.step(k + 1, total, image_index=i, num_images=n)   # raises on cancel
                return kwargs

            t = time.perf_counter()
            with torch.inference_mode():
                out = pipe(prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled,
                           image=image, mask_image=mask, height=run_h, width=run_w,
                           strength=request.strength, num_inference_steps=request.steps,
                           guidance_scale=request.guidance_scale, generator=generator,
                           max_sequence_length=self.max_sequence_length, output_type="pil",
                           callback_on_step_end=on_step)
            denoise += time.perf_counter() - t
            result = out.images[0]
            if result.size != (width, height):
                result = result.crop((0, 0, width, height))
            images.append(result)
        return images, denoise

    # -- LoRAs -----------------------------------------------------------------------------

    def _fetch_loras(self, loras: list[dict[str, Any]],
                     ctx: JobContext) -> list[tuple[str, Path]]:
        """Each LoRA as ``(cache key, local safetensors file)``, checked against the server's
        rules and downloaded when remote (outside the device lock)."""
        local: list[tuple[str, Path]] = []
        for i, lora in enumerate(loras):
            ctx.check_cancelled()
            field = f"loras[{i}].path"
            try:
                source = self.rules.resolve(lora.get("path"), field)
            except LoraRefused as exc:
                raise EngineInputError(field, str(exc), exc.error_type) from None
            local.append(self._local_file(source, field, ctx))
        return local

    def _local_file(self, source: LoraSource, field: str, ctx: JobContext) -> tuple[str, Path]:
        if source.kind == "file":
            path = Path(source.target)
            stat = path.stat()
            return f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}", path
        hub = source.kind == "hub"
        url = hub_url(source.target, source.weight_name or "") if hub else source.target
        if url is None or (hub and hub_offline()):
            raise EngineInputError(field, f"{field}: hub LoRAs need the hub over https, and here "
                                          "HF_ENDPOINT is not https or HF_HUB_OFFLINE is set; "
                                          "use a LoRA under --lora-dir or a URL",
                                   "file_download_error")
        path = download_lora(url, self.downloads, field, ctx, self.fetch_policy,
                             self.download_limits, hub=hub)
        return f"url:{url}", path

    def _apply_loras(self, loras: list[dict[str, Any]], local: list[tuple[str, Path]],
                     ctx: JobContext) -> list[dict[str, Any]]:
        """Load (once) and activate this job's LoRAs with its scales; none -> base weights."""
        pipe = self.pipe
        if not loras:
            if self._adapters:
                pipe.disable_lora()
                ctx.log("loras: none; LoRAs disabled (base weights)")
            return []
        names: list[str] = []
        weights: list[float] = []
        applied: list[dict[str, Any]] = []
        for i, (lora, (key, path)) in enumerate(zip(loras, local, strict=True)):
            ctx.check_cancelled()
            scale = float(lora.get("scale", 1.0))
            name = self._adapter_for(key, path, f"loras[{i}].path", ctx, keep=names)
            if name in names:   # the same LoRA twice: scales add up
                weights[names.index(name)] += scale
                ctx.log(f"loras[{i}]: same LoRA as an earlier item; scales added")
            else:
                names.append(name)
                weights.append(scale)
            applied.append({"path": str(lora["path"]), "scale": scale, "adapter": name})
        pipe.enable_lora()
        pipe.set_adapters(names, adapter_weights=weights)
        ctx.log("loras: active " + ", ".join(f"{a['adapter']}={a['scale']:g}" for a in applied))
        return applied

    def _adapter_for(self, key: str, path: Path, field: str, ctx: JobContext,
                     keep: list[str]) -> str:
        cached = self._adapters.get(key)
        if cached is not None:
            self._adapters.move_to_end(key)
            return cached
        if not is_safetensors(path):   # checked again right before loading: never a pickle
            raise EngineInputError(field, f"{field}: not an allowed LoRA: the file is not "
                                          "safetensors", "lora_not_allowed")
        name = adapter_name(key)
        self._evict(keep)
        t = time.perf_counter()
        try:
            with warnings.catch_warnings():
                # peft warns each time a second adapter joins a model; that is what we want
                warnings.filterwarnings("ignore", message=".*Already found a `peft_config`.*")
                # use_safetensors=True turns diffusers' pickle fallback off
                self.pipe.load_lora_weights(str(path.parent), weight_name=path.name,
                                            use_safetensors=True, local_files_only=True,
                                            adapter_name=name)
        except Exception as exc:  # noqa: BLE001 - any loader failure is this input's fault
            self._forget(name)
            if key.startswith("url:"):
                self.downloads.discard(path)   # a download that does not load is not kept
            ctx.log(f"{field}: the LoRA did not load: {type(exc).__name__}", "WARNING")
            raise EngineInputError(field, f"{field}: could not load this file as a FLUX LoRA "
                                          f"({type(exc).__name__})", "lora_load_error") from None
        self._adapters[key] = name
        ctx.log(f"{field}: loaded as adapter {name} in {time.perf_counter() - t:.2f} s")
        return name

    def _evict(self, keep: list[str]) -> None:
        while len(self._adapters) >= self.max_loras:
            for key, name in self._adapters.items():
                if name not in keep:
                    del self._adapters[key]
                    self.pipe.delete_adapters([name])
                    break
            else:
                return

    def _forget(self, name: str) -> None:
        """Remove a half-loaded adapter so the pipeline stays usable."""
        try:
            if name in (self.pipe.get_list_adapters().get("transformer") or []):
                self.pipe.delete_adapters([name])
        except Exception:  # noqa: BLE001, S110 - best effort cleanup after a failed load
            pass


def _cuda_available(device: str) -> bool:
    if device.strip().lower() != "auto":
        return False   # only auto needs to know; don't import torch for an explicit device
    torch, _ = import_diffusers()
    return bool(torch.cuda.is_available())

