"""klein 9B-KV across jobs: the references' keys and values kept from one call to the next.

Flux2KleinKVPipeline runs its first step in the transformer's "extract" mode (the reference tokens ride in front of
the noisy ones, attend only to themselves under a fixed timestep, and leave their per-layer keys and values in a
cache) and its later steps in "cached" mode (the noisy tokens attend to those keys and values without the reference
tokens). So the references' keys and values depend on the references, their positions, the weights with the
active adapters, and nothing of the prompt, the noise or the step: a later job with the same references can run its
first step in "cached" mode too. `ReferenceKV` wraps the transformer's forward on the instance: before a call the
denoiser names what the call's keys and values depend on (`expect`); an "extract" call whose key is held runs
"cached" with the held keys and values (one sample's, expanded to the batch) and hands them to the pipeline as
the cache it extracted; one that is not held runs as always and its first sample's keys and values are kept,
least recently used out past `capacity_bytes`. Any other call passes through untouched.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch
from cachetools import LRUCache
from diffusers.models.transformers.transformer_flux2 import Flux2KVCache

from deployments.contracts import GenerationParams

EXTRACT, CACHED = "extract", "cached"


def kv_key(params: GenerationParams) -> tuple:
    """What a call's reference keys and values depend on: the references in order, the size asked (their
    preparation may follow it), and the active adapters with their scales."""
    adapters = tuple((adapter.id, adapter.source, adapter.scale) for adapter in params.adapters)
    return tuple(reference.sha256 for reference in params.references), params.width, params.height, adapters


LayerKV = tuple[torch.Tensor, torch.Tensor]


class HeldKV:
    """One sample's keys and values of the references, per double-stream and single-stream layer."""

    def __init__(self, cache: Flux2KVCache):
        self.double = [(layer.k_ref[:1].clone(), layer.v_ref[:1].clone()) for layer in cache.double_block_caches]
        self.single = [(layer.k_ref[:1].clone(), layer.v_ref[:1].clone()) for layer in cache.single_block_caches]
        self.num_ref_tokens = cache.num_ref_tokens

    @property
    def bytes(self) -> int:
        return sum(t.element_size() * t.nelement() for pair in self.double + self.single for t in pair)

    def for_batch(self, batch_size: int) -> Flux2KVCache:
        """A cache as the pipeline's first step would have made it for `batch_size` samples."""
        cache = Flux2KVCache(len(self.double), len(self.single))
        cache.num_ref_tokens = self.num_ref_tokens
        for layers, held in ((cache.double_block_caches, self.double), (cache.single_block_caches, self.single)):
            for layer, (key, value) in zip(layers, held):
                layer.store(key.expand(batch_size, *key.shape[1:]), value.expand(batch_size, *value.shape[1:]))
        return cache


class ReferenceKV:
    """The references' keys and values of a KV transformer, kept across calls; one call at a time (the
    denoiser's pipeline lock)."""

    def __init__(self, transformer, capacity_bytes: int):
        self.held: LRUCache = LRUCache(maxsize=max(1, capacity_bytes), getsizeof=lambda held: held.bytes)
        self.enabled = capacity_bytes > 0
        self.key: Hashable | None = None
        self.hit: bool | None = None  # the last expected call's: None when it extracted nothing
        self._forward = transformer.forward
        transformer.forward = self.forward

    def expect(self, key: Hashable | None) -> None:
        """The next call's keys and values depend on `key` (None: keep nothing, e.g. a call without references)."""
        self.key, self.hit = (key if self.enabled else None), None

    def forward(self, *args, **kwargs):
        if args or kwargs.get("kv_cache_mode") != EXTRACT or not kwargs.get("num_ref_tokens") or self.key is None:
            return self._forward(*args, **kwargs)
        held = self.held.get(self.key)
        self.hit = held is not None
        if held is None:
            output = self._forward(**kwargs)
            kept = HeldKV(output[1])
            if kept.bytes <= self.held.maxsize:
                self.held[self.key] = kept
            return output
        return self._cached_step(held, **kwargs)

    def _cached_step(self, held: HeldKV, hidden_states, img_ids, num_ref_tokens, **kwargs):
        """The first step without the reference tokens, attending to the held keys and values."""
        batch_size = hidden_states.shape[0]
        cache = held.for_batch(batch_size)
        image_ids = img_ids[:, num_ref_tokens:] if img_ids.ndim == 3 else img_ids[num_ref_tokens:]
        kwargs.update(kv_cache=cache, kv_cache_mode=CACHED, return_dict=False)
        sample = self._forward(hidden_states=hidden_states[:, num_ref_tokens:], img_ids=image_ids, **kwargs)[0]
        return sample, cache
