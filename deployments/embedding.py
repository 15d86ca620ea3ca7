"""A prompt's embedding as it travels from the text encoder to the denoiser."""

from __future__ import annotations

from dataclasses import dataclass

import torch

WIRE_DTYPE = torch.bfloat16


@dataclass(frozen=True)
class PromptEmbedding:
    """One prompt's embedding: a contiguous bf16 CPU tensor (tokens x width) that pickles cheaply."""

    text_encoder_family: str
    embeds: torch.Tensor
    encode_s: float = 0.0  # the encoder's time for the batch this came from (0 from its cache alone)

    @property
    def embedding_dim(self) -> int:
        return int(self.embeds.shape[-1])
