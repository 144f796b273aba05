"""A tiny FLUX inpaint pipeline and tiny LoRA files, built in code (nothing downloaded).

The pipeline has FLUX.1-dev's structure (an 8x VAE with 16 latent channels, so packed latents
have 64 channels; ``guidance_embeds=True``; a CLIP-L-like and a T5-like text encoder with their
tokenizers made offline) at a size that runs a denoising step in milliseconds on a CPU.
``save_tiny_pipeline(folder)`` writes it with ``save_pretrained`` so the engine loads it with the
same ``FluxInpaintPipeline.from_pretrained(folder)`` call that loads the real model.
Recipe: ``../shared/docs/engines.md`` section 2.

Usage::

    folder = save_tiny_pipeline(tmp_path / "tiny-flux")
    make_tiny_lora(tmp_path / "a.safetensors", folder, seed=1)
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

__all__ = ["ATTENTION_TARGETS", "MLP_TARGETS", "build_tiny_pipeline", "build_tokenizers",
           "import_diffusers", "make_tiny_lora", "save_tiny_pipeline"]

#: LoRA targets: the attention projections, and (for a second, disjoint LoRA) the MLP layers.
ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
MLP_TARGETS = ("proj_mlp", "proj_out", "ff.net.2")

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-"


def import_diffusers() -> Any:
    """Import torch + diffusers once, offline, with their known-harmless import warnings muted
    (only here, not globally). Returns the ``diffusers`` module."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import diffusers
        import peft  # noqa: F401
        import transformers  # noqa: F401
    return diffusers


def build_tokenizers() -> tuple[Any, Any]:
    """A CLIP and a T5 tokenizer made in code (byte-level BPE / a small Unigram), offline."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer, T5Tokenizer

    chars = sorted(ByteLevel.alphabet())  # byte-level BPE with no merges: every byte is a token
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    clip_tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + c, -3.0) for c in _ALPHABET] + [(c, -4.0) for c in _ALPHABET]
    t5_tok = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)
    return clip_tok, t5_tok


def _tiny_transformer(seed: int = 0) -> Any:
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=64, out_channels=64, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
        pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=True)


def build_tiny_pipeline(seed: int = 0) -> Any:
    """A ``FluxInpaintPipeline`` of about 160 k parameters with random (seeded) weights."""
    import_diffusers()
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxInpaintPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok, t5_tok = build_tokenizers()
    torch.manual_seed(seed)
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_tok), hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, projection_dim=32, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        max_position_embeddings=77))
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tok), d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
        relative_attention_num_buckets=8, dropout_rate=0.0))  # d_model == joint_attention_dim
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, sample_size=32, layers_per_block=1,
        block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, norm_num_groups=4,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
        scaling_factor=1.5035)
    transformer = _tiny_transformer(seed)
    return FluxInpaintPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=clip, text_encoder_2=t5,
        tokenizer=clip_tok, tokenizer_2=t5_tok, transformer=transformer, vae=vae)


def save_tiny_pipeline(folder: Path | str, seed: int = 0) -> Path:
    """Build the tiny pipeline and ``save_pretrained`` it to ``folder`` (about 700 kB)."""
    folder = Path(folder)
    build_tiny_pipeline(seed).save_pretrained(str(folder))
    return folder


def make_tiny_lora(path: Path | str, seed: int, targets: tuple[str, ...] = ATTENTION_TARGETS,
                   rank: int = 4) -> Path:
    """Write a LoRA for the tiny transformer to ``path`` (a ``.safetensors`` file).

    ``init_lora_weights=False`` gives both LoRA matrices random values; peft's default sets
    ``lora_B`` to zero, and such a LoRA changes nothing.
    """
    import_diffusers()
    import torch
    from diffusers import FluxInpaintPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    path = Path(path)
    donor = _tiny_transformer(0)
    torch.manual_seed(seed)
    donor.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets),
                                 init_lora_weights=False))
    with torch.no_grad():  # make the effect clearly visible at scale 1 on a random model
        for name, param in donor.named_parameters():
            if "lora_B" in name:
                param.mul_(4.0)
    FluxInpaintPipeline.save_lora_weights(
        str(path.parent), transformer_lora_layers=get_peft_model_state_dict(donor),
        weight_name=path.name)
    return path
