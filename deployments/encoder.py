"""TextEncoder: prompts -> embeddings, once per prompt, loaded without the transformer or VAE."""

from __future__ import annotations

import threading

import torch
from cachetools import LRUCache

from deployments.acceleration import truncate_text_encoder
from deployments.contracts import DenoiseJob, GenerationParams
from deployments.embedding import WIRE_DTYPE, PromptEmbedding
from deployments.loading import load_pipeline, pick_device, pick_dtype, resolve_weights
from deployments.registry import VariantSpec, spec_of
from deployments.weights import ResolvedWeights


# Embeddings travel and are cached in bf16 whatever the encoder computes in: half the bytes of fp32
# (7.9 MB instead of 15.7 MB for a real 4B prompt) and the denoiser casts to its own dtype anyway.
# On the shapes model bf16 embeddings change a pixel by at most 1/255.
class TextEncoder:
    """The pipeline's own `encode_prompt`, with an LRU cache keyed by (model, prompt, length), bounded in bytes.

    With `truncate` the encoder stops after the last hidden layer the pipeline reads (27 of Qwen3's 36) and has
    no LM head: the same embeddings, bit for bit, for three quarters of the work.
    """

    def __init__(
        self,
        model: str | VariantSpec,
        weights: str = "emulated",
        cache_bytes: int = 1024**3,
        device: str = "auto",
        dtype: str = "auto",
        truncate: bool = True,
    ):
        self.variant = spec_of(model)
        self.weights: ResolvedWeights = resolve_weights(self.variant, weights)
        self.device = pick_device(device)
        self.pipeline = load_pipeline(
            self.weights, self.device, pick_dtype(self.device, dtype), for_encoder=True, transformer=None, vae=None
        )
        if truncate:
            truncate_text_encoder(self.pipeline.text_encoder, self.weights.text_encoder_out_layers)
        self.cache: LRUCache = LRUCache(maxsize=cache_bytes, getsizeof=lambda embedding: embedding.embeds.nbytes)
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
        unique = list(dict.fromkeys(prompts))
        with self._lock:
            found = {p: e for p in unique if (e := self.cache.get(self._key(p))) is not None}
            self.cache_hits += sum(1 for p in prompts if p in found)
        missing = [p for p in unique if p not in found]
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
                    found[prompt] = PromptEmbedding(self.family, embed.to(WIRE_DTYPE).cpu().contiguous())
                    if found[prompt].embeds.nbytes <= self.cache.maxsize:  # cachetools refuses a larger item
                        self.cache[self._key(prompt)] = found[prompt]
        return [found[p] for p in prompts]

    def job(self, params: GenerationParams, job_id: str | None = None) -> DenoiseJob:
        """In-process callers' way to a denoiser job: the prompt, and the empty prompt where CFG runs."""
        prompts = [params.prompt, ""] if params.uses_cfg else [params.prompt]
        embeddings = self.encode(prompts)
        return DenoiseJob(params, embeddings[0], embeddings[1] if params.uses_cfg else None, job_id=job_id)
