"""The real FLUX.2 [klein] architectures at full size, with random weights, built in memory.

Speed and memory do not depend on weight values, so `weights: emulated:real` measures real
GPU latency, memory and cost without downloading anything. `memory.py` counts parameters on
the same modules built on the meta device.
"""

from __future__ import annotations

from contextlib import contextmanager

import diffusers
import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
from transformers import Qwen3Config, Qwen3ForCausalLM

from deployments.registry import TextEncoderSpec, VariantSpec
from deployments.tokenizer import train_tokenizer

QWEN3_SHAPES = {  # public Qwen3 configs: layers, heads, kv heads, intermediate, vocab
    "qwen3-4b": dict(
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=9728,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "qwen3-8b": dict(
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=12288,
        vocab_size=151936,
        tie_word_embeddings=False,
    ),
}


def real_transformer(variant: VariantSpec) -> Flux2Transformer2DModel:
    size = variant.transformer
    return Flux2Transformer2DModel(
        in_channels=128,
        num_layers=size.num_double_blocks,
        num_single_layers=size.num_single_blocks,
        attention_head_dim=size.attention_head_dim,
        num_attention_heads=size.num_attention_heads,
        joint_attention_dim=variant.text_encoder.embedding_dim,
        guidance_embeds=False,
    )


def real_text_encoder(spec: TextEncoderSpec) -> Qwen3ForCausalLM:
    return Qwen3ForCausalLM(Qwen3Config(hidden_size=spec.hidden_size, head_dim=128, **QWEN3_SHAPES[spec.family]))


def real_vae() -> AutoencoderKLFlux2:
    return AutoencoderKLFlux2()


@contextmanager
def _building_on(device: torch.device, dtype: torch.dtype):
    """Create parameters directly on `device` in `dtype`: a 9B model never exists in fp32 first."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_real_size_pipeline(
    variant: VariantSpec,
    device: torch.device,
    dtype: torch.dtype,
    seed: int = 0,
    for_encoder: bool = False,
    **left_out: None,
) -> diffusers.DiffusionPipeline:
    """The variant's pipeline (its spec's class) at full size; parts named in `left_out` (e.g. transformer=None) are skipped."""
    torch.manual_seed(seed)
    parts = {
        "transformer": lambda: real_transformer(variant),
        "vae": real_vae,
        "text_encoder": lambda: real_text_encoder(variant.text_encoder),
    }
    with _building_on(device, dtype):
        modules = {name: None if name in left_out else build().eval() for name, build in parts.items()}
    tokenizer = None if "tokenizer" in left_out or "text_encoder" in left_out else train_tokenizer()
    pipeline = getattr(diffusers, variant.encoder_pipeline_class if for_encoder else variant.pipeline_class)(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
        tokenizer=tokenizer,
        is_distilled=variant.distilled,
        **modules,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline
