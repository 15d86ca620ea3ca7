"""A transformer's Linear layers and their widths: what an adapter must match (torch side of lora.compat)."""

from __future__ import annotations

import torch
from diffusers import Flux2Transformer2DModel


def module_linear_shapes(module: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of every Linear inside `module`."""
    return {
        name: (layer.in_features, layer.out_features)
        for name, layer in module.named_modules()
        if isinstance(layer, torch.nn.Linear)
    }


def linear_shapes(transformer_config: dict) -> dict[str, tuple[int, int]]:
    """The same, for a transformer known only by its config (built on the meta device)."""
    with torch.device("meta"):
        return module_linear_shapes(Flux2Transformer2DModel.from_config(transformer_config))
