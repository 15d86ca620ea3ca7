"""A repeated reference costs nothing: reference images kept prepared across jobs, bounded in bytes.

diffusers' klein pipelines (plain, inpaint and 9B-KV) prepare every reference on every call: the image
processor resizes and normalises it (`image_processor.preprocess`), then `_encode_vae_image` VAE-encodes,
patchifies and batch-normalises it. Their `image=` takes no precomputed latents, so `PreparedReferences`
wraps those two methods on the pipeline instance (its class and other instances are untouched). Before a
call the denoiser names the references the call prepares, in the order the pipeline prepares them (`image=`
in order; the inpaint pipeline's source, then its `image_reference`), and each wrapped call answers from the
cache when it holds that reference at that size (and, for latents, that dtype and device). The pipeline then
packs, positions and repeats them as it always does, so images come out byte-identical with the cache on or
off (tests/unit/test_reference_cache.py).

The 9B-KV variant's reference keys and values are kept across calls beside these (deployments/kv_reuse.py).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

import torch
from cachetools import LRUCache

REFERENCE_CACHE_BYTES = 512 * 1024**2  # a 1 MP reference: 12 MB of float32 pixels and 2 MB of latents


@dataclass(frozen=True)
class PixelsKey:
    """A reference as the image processor made it: its content, the variant, and the size and resize asked."""

    sha256: str
    variant: str
    width: int | None
    height: int | None
    resize_mode: str
    crops: tuple | None


@dataclass(frozen=True)
class LatentsKey:
    """Its VAE latents: the same reference, encoded from pixels of this shape, dtype and device."""

    pixels: PixelsKey
    shape: tuple[int, ...]
    dtype: str
    device: str


@dataclass(frozen=True)
class Preparation:
    """One call's reference preparation: whether every reference's latents came from the cache, and its
    seconds (loading from storage, preprocessing and VAE encoding)."""

    hit: bool
    seconds: float


def note_preparation(result, preparation: Preparation | None) -> None:
    """Add a pass's preparation to a request's result: a request is a hit only if each of its passes was."""
    if preparation is None:
        return
    result.timings_s["reference_prepare"] = result.timings_s.get("reference_prepare", 0.0) + preparation.seconds
    result.reference_cache = "hit" if preparation.hit and result.reference_cache != "miss" else "miss"


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.element_size() * tensor.nelement()


class PreparedReferences:
    """Preprocessed pixels and VAE latents of references, least recently used out past `capacity_bytes`
    (0 keeps none). Used by one pipeline call at a time (the denoiser's pipeline lock)."""

    def __init__(self, variant: str, capacity_bytes: int = REFERENCE_CACHE_BYTES):
        self.variant = variant
        self.tensors: LRUCache = LRUCache(maxsize=capacity_bytes, getsizeof=tensor_bytes)
        self._expected: list[str] | None = None  # sha256 of what the current call prepares, in order
        self._pixels_keys: list[PixelsKey] = []
        self._encoded = 0
        self._hit = True
        self._seconds = 0.0

    def install(self, pipeline) -> None:
        """Wrap this pipeline instance's preprocess and VAE encode (the plain and the inpaint pipeline share one
        VAE, so they share what is kept)."""
        preprocess, encode = pipeline.image_processor.preprocess, pipeline._encode_vae_image
        signature = inspect.signature(preprocess)

        def cached_preprocess(*args, **kwargs):
            if self._expected is None:
                return preprocess(*args, **kwargs)
            call = signature.bind(*args, **kwargs)
            call.apply_defaults()
            return self._preprocess(lambda: preprocess(*args, **kwargs), call.arguments)

        def cached_encode(image: torch.Tensor, generator=None):
            if self._expected is None:
                return encode(image=image, generator=generator)
            return self._encode(lambda: encode(image=image, generator=generator), image)

        pipeline.image_processor.preprocess = cached_preprocess
        pipeline._encode_vae_image = cached_encode

    def expect(self, sha256s: list[str], loading_s: float = 0.0) -> None:
        """The next pipeline call prepares these references, in this order (none: the wrappers stand aside)."""
        self._expected = list(sha256s) or None
        self._pixels_keys, self._encoded, self._hit, self._seconds = [], 0, True, loading_s

    def finish(self) -> Preparation | None:
        """What the call's preparation took (None for a call without references); the wrappers stand aside again."""
        expected, self._expected = self._expected, None
        if expected is None:
            return None
        if self._encoded != len(expected):
            raise RuntimeError(
                f"the pipeline VAE-encoded {self._encoded} images but was given {len(expected)} references; "
                "deployments/reference_cache.py no longer matches how this diffusers prepares them: update it, or "
                "set reference_cache_bytes: 0 to run without it"
            )
        return Preparation(self._hit, self._seconds)

    def _preprocess(self, compute, arguments: dict) -> torch.Tensor:
        started = time.perf_counter()
        index = len(self._pixels_keys)
        if index >= len(self._expected):
            raise RuntimeError(
                f"the pipeline preprocessed more images than the {len(self._expected)} references it was given; "
                "deployments/reference_cache.py no longer matches this diffusers: update it, or set "
                "reference_cache_bytes: 0"
            )
        crops = arguments["crops_coords"]
        key = PixelsKey(
            self._expected[index],
            self.variant,
            arguments["width"],
            arguments["height"],
            arguments["resize_mode"],
            None if crops is None else tuple(crops),
        )
        self._pixels_keys.append(key)
        pixels = self.tensors.get(key)
        if pixels is None:
            pixels = compute()
            self._keep(key, pixels)
        self._seconds += time.perf_counter() - started
        return pixels

    def _encode(self, compute, image: torch.Tensor) -> torch.Tensor:
        """The latents of the `_encoded`-th preprocessed reference. The pipeline encodes with the distribution's
        mode (sample_mode="argmax"), so they do not depend on the call's generator."""
        started = time.perf_counter()
        if self._encoded >= len(self._pixels_keys):
            raise RuntimeError(
                "the pipeline VAE-encoded an image it had not preprocessed as a reference; "
                "deployments/reference_cache.py no longer matches this diffusers: update it, or set "
                "reference_cache_bytes: 0"
            )
        key = LatentsKey(self._pixels_keys[self._encoded], tuple(image.shape), str(image.dtype), str(image.device))
        self._encoded += 1
        latents = self.tensors.get(key)
        if latents is None:
            self._hit = False
            latents = compute()
            if latents.device.type == "cuda":
                torch.cuda.synchronize(latents.device)  # kernels run ahead of Python: time what they did
            self._keep(key, latents)
        self._seconds += time.perf_counter() - started
        return latents

    def _keep(self, key, tensor: torch.Tensor) -> None:
        if tensor_bytes(tensor) <= self.tensors.maxsize:  # one larger than the whole cache is not kept
            self.tensors[key] = tensor
