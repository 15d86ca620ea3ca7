"""Images from a pipeline during and after a finetune: its samples and the strength sweep.

Prompts are encoded once, before training, so on a GPU the text encoder can leave the card while the
transformer trains; images are drawn as the service draws them (the weights' default steps and guidance, the
empty prompt as the negative one, image i of a prompt from seed `first_seed + i`), at the training side.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from PIL import Image

from deployments.weights import ResolvedWeights


@dataclass(frozen=True)
class SampleSettings:
    side_px: int
    steps: int
    guidance: float
    max_sequence_length: int
    text_encoder_out_layers: tuple[int, ...]

    @classmethod
    def of(cls, weights: ResolvedWeights, side_px: int, edits: bool = False) -> SampleSettings:
        return cls(
            side_px=side_px,
            steps=weights.defaults.steps,
            guidance=weights.defaults.guidance_for(edits),
            max_sequence_length=weights.max_sequence_length,
            text_encoder_out_layers=weights.text_encoder_out_layers,
        )


@torch.no_grad()
def encode_prompts(pipeline, settings: SampleSettings, prompts: list[str], device: torch.device) -> torch.Tensor:
    return pipeline.encode_prompt(
        prompt=prompts,
        device=device,
        max_sequence_length=settings.max_sequence_length,
        text_encoder_out_layers=settings.text_encoder_out_layers,
    )[0]


@torch.no_grad()
def draw_images(
    pipeline,
    settings: SampleSettings,
    prompt_embeds: torch.Tensor,
    empty_embeds: torch.Tensor,
    seeds: int,
    first_seed: int = 0,
    reference: Image.Image | None = None,
) -> list[Image.Image]:
    """`seeds` images per prompt embedding, in prompt order."""
    count = prompt_embeds.shape[0]
    dtype = pipeline.transformer.dtype
    arguments = {"image": [reference]} if reference is not None else {}
    return pipeline(
        prompt_embeds=prompt_embeds.to(dtype),
        negative_prompt_embeds=empty_embeds.expand(count, -1, -1).to(dtype),
        num_images_per_prompt=seeds,
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance,
        generator=[torch.Generator().manual_seed(first_seed + i) for _ in range(count) for i in range(seeds)],
        width=settings.side_px,
        height=settings.side_px,
        max_sequence_length=settings.max_sequence_length,
        text_encoder_out_layers=settings.text_encoder_out_layers,
        **arguments,
    ).images


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
