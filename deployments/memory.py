"""How much GPU memory each part of a variant needs, from its real architecture.

Parameter counts come from the real configurations instantiated on the meta device (no
weights, no download); memory is bf16 weights plus a working margin for activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deployments.real_size import real_text_encoder, real_transformer, real_vae
from deployments.registry import ModelVariant, TextEncoderSpec

BYTES_PER_PARAM_BF16 = 2
ACTIVATIONS_GB_AT_1MP = {"transformer": 2.0, "text_encoder": 0.5, "vae": 1.5}


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
    with torch.device("meta"):
        return _count(real_transformer(variant))


def text_encoder_params(spec: TextEncoderSpec) -> int:
    with torch.device("meta"):
        return _count(real_text_encoder(spec).model)


def vae_params() -> int:
    with torch.device("meta"):
        return _count(real_vae())


def components(variant: ModelVariant) -> list[Component]:
    return [
        Component(f"{variant.name} transformer", "transformer", transformer_params(variant)),
        Component(f"{variant.name} VAE", "vae", vae_params()),
        Component(
            f"{variant.text_encoder.family} text encoder", "text_encoder", text_encoder_params(variant.text_encoder)
        ),
    ]
