"""Memory bounds of the model workers: passes split by pixels, VAE decode per image, embeddings in
bf16 and a cache bounded in bytes. In-process on the tiny emulated checkpoints, no Ray."""

from __future__ import annotations

import torch

from deployments.contracts import GenerationParams
from deployments.encoder import TextEncoder
from deployments.registry import get_variant
from deployments.weights import describe_weights

MODEL = "flux-2-klein-4b"
TINY_DEFAULTS = describe_weights(get_variant(MODEL), "emulated:tiny").defaults


def params(side: int, num_images: int, seed: int = 7) -> GenerationParams:
    return GenerationParams.with_defaults(
        TINY_DEFAULTS, "a prompt", width=side, height=side, num_images=num_images, seed=seed
    )


def test_twelve_large_images_run_in_passes_by_pixels_and_alone(denoiser):
    """12 images at 2048x2048 (4.2 MP each) fit 3 to a 12 MP pass; the small request is not dragged along."""
    passes = denoiser._plan_forward_passes([params(2048, 12), params(1024, 1, seed=9)])
    large = [chunk for chunk in passes if chunk[0].request_index == 0]
    assert [len(chunk) for chunk in large] == [3] * 4
    assert all({slot.request_index for slot in chunk} == {0} for chunk in large)
    assert [len(chunk) for chunk in passes if chunk[0].request_index == 1] == [1]


def test_an_image_larger_than_the_pixel_cap_runs_alone(denoiser_factory):
    capped = denoiser_factory(max_pixels_per_forward=64 * 64)
    assert [len(chunk) for chunk in capped._plan_forward_passes([params(128, 3)])] == [1, 1, 1]


def test_pixel_cap_holds_when_generating(denoiser_factory, prompt):
    from tests.unit.test_workers import make_request

    capped = denoiser_factory(max_pixels_per_forward=2 * 64 * 64)
    [result] = capped.generate([make_request(prompt, num_images=5)])
    assert len(result.images) == 5 and result.batch_images == 2


def test_vae_decodes_one_image_at_a_time(denoiser_factory, prompt):
    from tests.unit.test_workers import make_request

    denoiser = denoiser_factory()
    decode = denoiser.pipeline.vae.decode
    batch_sizes: list[int] = []

    def counting_decode(latents, **kwargs):
        batch_sizes.append(latents.shape[0])
        return decode(latents, **kwargs)

    denoiser.pipeline.vae.decode = counting_decode
    [result] = denoiser.generate([make_request(prompt, num_images=3)])
    assert len(result.images) == 3 and result.batch_images == 3
    assert batch_sizes == [1, 1, 1]


def test_embeddings_travel_in_bf16_and_the_cache_is_bounded_in_bytes():
    probe = TextEncoder(MODEL, weights="emulated:tiny")
    [embedding] = probe.encode(["a red circle"])
    assert embedding.embeds.dtype == torch.bfloat16
    one_bytes = embedding.embeds.nbytes
    encoder = TextEncoder(MODEL, weights="emulated:tiny", cache_bytes=2 * one_bytes)
    encoder.encode(["one", "two", "three"])
    assert len(encoder.cache) == 2 and encoder.cache.currsize <= 2 * one_bytes
    assert [e.embeds.dtype for e in encoder.encode(["one", "three", "three"])] == [torch.bfloat16] * 3
    assert encoder.encoded_prompts == 4, "'one' was evicted and encoded again; 'three' came from the cache"
