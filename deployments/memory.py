"""How much GPU memory each part of a variant needs, from its real architecture.

Parameter counts come from the real configurations instantiated on the meta device (no
weights, no download); memory is bf16 weights plus a working margin for activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deployments.real_size import real_text_encoder, real_transformer, real_vae
from deployments.registry import TextEncoderSpec, VariantSpec

BYTES_PER_PARAM_BF16 = 2
BYTES_PER_PARAM_FP8 = 1
ACTIVATIONS_GB_AT_1MP = {"transformer": 2.0, "text_encoder": 0.5, "vae": 1.5}


@dataclass(frozen=True)
class Component:
    name: str
    kind: str
    params: int
    fp8_params: int = 0  # of `params`, those stored in FP8 (quantization: fp8)

    @property
    def memory_gb(self) -> float:
        weight_bytes = (self.params - self.fp8_params) * BYTES_PER_PARAM_BF16 + self.fp8_params * BYTES_PER_PARAM_FP8
        return weight_bytes / 1e9 + ACTIVATIONS_GB_AT_1MP[self.kind]


def _count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def transformer_params(variant: VariantSpec) -> int:
    with torch.device("meta"):
        return _count(real_transformer(variant))


def transformer_fp8_params(variant: VariantSpec) -> int:
    """Parameters `quantization: fp8` stores in one byte: the weights of the blocks' linear layers."""
    from deployments.acceleration import fp8_quantizable

    with torch.device("meta"):
        modules = real_transformer(variant).named_modules()
        return sum(module.weight.numel() for name, module in modules if fp8_quantizable(module, name))


def text_encoder_params(spec: TextEncoderSpec) -> int:
    with torch.device("meta"):
        return _count(real_text_encoder(spec).model)


def vae_params() -> int:
    with torch.device("meta"):
        return _count(real_vae())


def components(variant: VariantSpec, quantization: str = "none") -> list[Component]:
    fp8_params = transformer_fp8_params(variant) if quantization == "fp8" else 0
    return [
        Component(f"{variant.name} transformer", "transformer", transformer_params(variant), fp8_params),
        Component(f"{variant.name} VAE", "vae", vae_params()),
        Component(
            f"{variant.text_encoder.family} text encoder", "text_encoder", text_encoder_params(variant.text_encoder)
        ),
    ]
