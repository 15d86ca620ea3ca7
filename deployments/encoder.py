"""TextEncoder: prompts -> embeddings, once per prompt, loaded without the transformer or VAE."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from cachetools import LRUCache

from deployments.contracts import DenoiseJob, GenerationParams
from deployments.registry import get_variant
from deployments.weights import ResolvedWeights, load_pipeline, pick_device, pick_dtype, resolve_weights


@dataclass(frozen=True)
class PromptEmbedding:
    """One prompt's embedding: a contiguous CPU tensor (tokens x width) that pickles cheaply."""

    text_encoder_family: str
    embeds: torch.Tensor

    @property
    def embedding_dim(self) -> int:
        return int(self.embeds.shape[-1])


class TextEncoder:
    """The pipeline's own `encode_prompt`, with an LRU cache keyed by (model, prompt, length)."""

    def __init__(
        self,
        model: str,
        weights: str = "emulated",
        cache_size: int = 1024,
        device: str = "auto",
        dtype: str = "auto",
    ):
        self.variant = get_variant(model)
        self.weights: ResolvedWeights = resolve_weights(self.variant, weights)
        self.device = pick_device(device)
        self.pipeline = load_pipeline(
            self.weights, self.device, pick_dtype(self.device, dtype), transformer=None, vae=None
        )
        self.cache: LRUCache = LRUCache(maxsize=cache_size)
        self.cache_hits = 0
        self.encoded_prompts = 0
        self._lock = threading.Lock()

    @property
    def family(self) -> str:
        return self.weights.text_encoder_family

    def _key(self, prompt: str) -> tuple[str, str, int]:
        return (self.weights.source, prompt, self.weights.max_sequence_length)

    def encode(self, prompts: list[str]) -> list[PromptEmbedding]:
        """Embeddings for `prompts` in order; cached prompts are not encoded again."""
        with self._lock:
            missing = list(dict.fromkeys(p for p in prompts if self._key(p) not in self.cache))
            self.cache_hits += sum(1 for p in prompts if p not in missing)
        if missing:
            with torch.inference_mode():
                embeds, _text_ids = self.pipeline.encode_prompt(
                    prompt=missing,
                    device=self.device,
                    max_sequence_length=self.weights.max_sequence_length,
                    text_encoder_out_layers=self.weights.text_encoder_out_layers,
                )
            with self._lock:
                self.encoded_prompts += len(missing)
                for prompt, embed in zip(missing, embeds):
                    self.cache[self._key(prompt)] = PromptEmbedding(self.family, embed.cpu().contiguous())
        with self._lock:
            return [self._cached_or_fail(p) for p in prompts]

    def _cached_or_fail(self, prompt: str) -> PromptEmbedding:
        embedding = self.cache.get(self._key(prompt))
        if embedding is None:
            raise RuntimeError(
                "The embedding cache is smaller than one batch of prompts; raise cache_size."
            )
        return embedding

    def job(self, params: GenerationParams, job_id: str | None = None) -> DenoiseJob:
        """In-process callers' way to a denoiser job: the prompt, and the empty prompt where CFG runs."""
        prompts = [params.prompt, ""] if params.uses_cfg else [params.prompt]
        embeddings = self.encode(prompts)
        return DenoiseJob(params, embeddings[0], embeddings[1] if params.uses_cfg else None, job_id=job_id)
