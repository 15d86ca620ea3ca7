"""How much GPU memory each part of a variant needs, from its real architecture.

Parameter counts come from the real configurations instantiated on the meta device (no
weights, no download); memory is bf16 weights plus a working margin for activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
from transformers import Qwen3Config, Qwen3ForCausalLM

from deployments.registry import ModelVariant, TextEncoderSpec

BYTES_PER_PARAM_BF16 = 2
ACTIVATIONS_GB_AT_1MP = {"transformer": 2.0, "text_encoder": 0.5, "vae": 1.5}
QWEN3_SHAPES = {  # public Qwen3 configs: layers, heads, kv heads, intermediate, vocab
    "qwen3-4b": dict(num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, intermediate_size=9728, vocab_size=151936, tie_word_embeddings=True),
    "qwen3-8b": dict(num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, intermediate_size=12288, vocab_size=151936, tie_word_embeddings=False),
}


@dataclass(frozen=True)
class Component:
    name: str
    kind: str
    params: int

    @property
    def memory_gb(self) -> float:
        return self.params * BYTES_PER_PARAM_BF16 / 1e9 + ACTIVATIONS_GB_AT_1MP[self.kind]


def _count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def transformer_params(variant: ModelVariant) -> int:
    size = variant.transformer
    with torch.device("meta"):
        return _count(Flux2Transformer2DModel(
            in_channels=128, num_layers=size.num_double_blocks, num_single_layers=size.num_single_blocks,
            attention_head_dim=size.attention_head_dim, num_attention_heads=size.num_attention_heads,
            joint_attention_dim=variant.text_encoder.embedding_dim, guidance_embeds=False,
        ))


def text_encoder_params(spec: TextEncoderSpec) -> int:
    config = Qwen3Config(hidden_size=spec.hidden_size, head_dim=128, **QWEN3_SHAPES[spec.family])
    with torch.device("meta"):
        return _count(Qwen3ForCausalLM(config).model)


def vae_params() -> int:
    with torch.device("meta"):
        return _count(AutoencoderKLFlux2())


def components(variant: ModelVariant) -> list[Component]:
    return [
        Component(f"{variant.name} transformer", "transformer", transformer_params(variant)),
        Component(f"{variant.name} VAE", "vae", vae_params()),
        Component(f"{variant.text_encoder.family} text encoder", "text_encoder", text_encoder_params(variant.text_encoder)),
    ]
