"""FLUX's rectified-flow objective on the real diffusers components, shared by all training.

Latents follow the pipeline's own path (VAE -> patchify 2x2 -> batch-norm statistics -> pack
into tokens), so what a model learns here is what `Flux2KleinPipeline` samples from. Noise
levels are in [0, 1]; the transformer scales them by 1000 itself.
"""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel


def images_to_tokens(vae: AutoencoderKLFlux2, pixels: torch.Tensor, sample: bool = False) -> torch.Tensor:
    """Pixels in [-1, 1] (B, 3, H, W) -> normalised latent tokens (B, H/16 * W/16, C*4)."""
    posterior = vae.encode(pixels).latent_dist
    latents = posterior.sample() if sample else posterior.mode()
    patches = Flux2KleinPipeline._patchify_latents(latents)
    mean = vae.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
    return Flux2KleinPipeline._pack_latents((patches - mean) / std)


@torch.no_grad()
def set_latent_statistics(vae: AutoencoderKLFlux2, pixels: torch.Tensor, batch_size: int = 64) -> None:
    """Store per-channel mean/var of patchified latents in `vae.bn`, which `encode` never sets."""
    patches = torch.cat(
        [
            Flux2KleinPipeline._patchify_latents(vae.encode(pixels[i : i + batch_size]).latent_dist.mode())
            for i in range(0, len(pixels), batch_size)
        ]
    )
    vae.bn.running_mean.copy_(patches.mean(dim=(0, 2, 3)))
    vae.bn.running_var.copy_(patches.var(dim=(0, 2, 3)))


def token_ids(
    batch_size: int, height_tokens: int, width_tokens: int, text_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids for image and text tokens, as the pipeline builds them."""
    grid = torch.zeros(batch_size, 1, height_tokens, width_tokens)
    image_ids = Flux2KleinPipeline._prepare_latent_ids(grid)
    text_ids = Flux2KleinPipeline._prepare_text_ids(torch.zeros(batch_size, text_tokens, 1))
    return image_ids, text_ids


def sample_noise_levels(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Logit-normal noise levels in (0, 1), which weight the middle of the path as SD3/FLUX do."""
    return torch.sigmoid(torch.randn(batch_size, generator=generator))


def shift_noise_levels(sigmas: torch.Tensor, scheduler_config: dict, image_tokens: int, steps: int) -> torch.Tensor:
    """Noise levels moved as the checkpoint's scheduler moves them when it samples `image_tokens` tokens in
    `steps` steps (klein's resolution-dependent shift, or a fixed `shift`), so a finetune trains where its
    sampler spends its steps; a scheduler with shift 1 and no dynamic shifting leaves them as they are."""
    if scheduler_config.get("use_dynamic_shifting"):
        from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

        scale = math.exp(compute_empirical_mu(image_tokens, steps))
    else:
        scale = float(scheduler_config.get("shift", 1.0))
    return scale * sigmas / (1 + (scale - 1) * sigmas)


def flow_matching_loss(
    transformer: Flux2Transformer2DModel,
    clean_tokens: torch.Tensor,
    prompt_embeds: torch.Tensor,
    image_ids: torch.Tensor,
    text_ids: torch.Tensor,
    generator: torch.Generator,
    reference_tokens: torch.Tensor | None = None,
    reference_ids: torch.Tensor | None = None,
    noise_levels: torch.Tensor | None = None,
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE between the predicted and true velocity (noise - data) at a random noise level (logit-normal unless
    `noise_levels` are given); with `sample_weights`, their weighted mean over the samples (DreamBooth's prior
    images beside the instance ones in one forward pass).

    Reference tokens (editing) ride clean after the noisy ones, as the pipeline appends them,
    and only the noisy tokens' prediction is scored.
    """
    if noise_levels is None:
        noise_levels = sample_noise_levels(clean_tokens.shape[0], generator)
    sigmas = noise_levels.to(clean_tokens.device, clean_tokens.dtype)
    noise = torch.randn(clean_tokens.shape, generator=generator).to(clean_tokens.device, clean_tokens.dtype)
    noisy = (1 - sigmas.view(-1, 1, 1)) * clean_tokens + sigmas.view(-1, 1, 1) * noise
    if reference_tokens is not None:
        noisy = torch.cat([noisy, reference_tokens], dim=1)
        image_ids = torch.cat([image_ids, reference_ids], dim=1)
    predicted = transformer(
        hidden_states=noisy,
        timestep=sigmas,
        guidance=None,
        encoder_hidden_states=prompt_embeds,
        txt_ids=text_ids,
        img_ids=image_ids,
        return_dict=False,
    )[0][:, : clean_tokens.shape[1]]
    if sample_weights is None:
        return torch.nn.functional.mse_loss(predicted.float(), (noise - clean_tokens).float())
    per_sample = (predicted.float() - (noise - clean_tokens).float()).pow(2).mean(dim=(1, 2))
    weights = sample_weights.to(per_sample.device, per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum()
