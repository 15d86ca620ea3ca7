"""Denoiser: batches of prompt embeddings -> encoded images, loaded without the text encoder.

Requests that can share a forward pass (same size, steps and guidance) run as one latent
batch, at most `max_images_per_forward` images at a time. Each image's starting noise is
drawn on the CPU from its own seed, so an image is the same whether its request runs alone
or inside a batch, on any device.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from pathlib import Path

import torch
from cachetools import LRUCache

from deployments.images import encode_image
from deployments.params import MAX_SEED, GenerationRequest, InvalidRequestError
from deployments.registry import get_variant
from deployments.weights import load_pipeline, pick_device, pick_dtype, resolve_weights

from lora.compat import AdapterMismatch, check_compatible, inspect_adapter, module_linear_shapes

ProgressCallback = Callable[[int, int, int], None]
CancelCheck = Callable[[int], bool]


class GenerationCancelled(Exception):
    """Raised inside the step loop when every request of a forward pass was cancelled."""


@dataclass
class GenerationResult:
    """Images of one request; `timings_s` holds denoise and decode (VAE + image encoding)."""

    images: list[bytes]
    output_format: str
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    timings_s: dict[str, float] = field(default_factory=dict)
    batch_images: int = 0
    batch_requests: int = 0
    cancelled: bool = False


class AdapterCache:
    """LoRA adapters loaded into the pipeline on demand, at most `capacity`, least recently used out.

    Requests without adapters run with LoRA disabled, so they match a fresh base model.
    """

    def __init__(self, pipeline, capacity: int):
        self.pipeline = pipeline
        self.loaded: LRUCache = LRUCache(maxsize=capacity)
        self.loads = 0

    @staticmethod
    def peft_name(key: str) -> str:
        """peft module names cannot hold '.', and ids are user text: name adapters by a hash."""
        return "lora_" + hashlib.sha256(key.encode()).hexdigest()[:16]

    def activate(self, adapters) -> None:
        if not adapters:
            if self.loaded:
                self.pipeline.disable_lora()
            return
        if len(adapters) > self.loaded.maxsize:
            raise InvalidRequestError("loras", f"at most {self.loaded.maxsize} adapters can be combined here.")
        keys = [f"{adapter.id}\0{adapter.path}" for adapter in adapters]
        for key, adapter in zip(keys, adapters):
            if key in self.loaded:
                self.loaded[key]  # touch: most recently used
                continue
            while len(self.loaded) >= self.loaded.maxsize:
                evicted, _ = self.loaded.popitem()
                self.pipeline.delete_adapters(self.peft_name(evicted))
            self.pipeline.load_lora_weights(adapter.path, adapter_name=self.peft_name(key))
            self.loaded[key] = adapter.id
            self.loads += 1
        self.pipeline.enable_lora()
        self.pipeline.set_adapters([self.peft_name(key) for key in keys], [a.scale for a in adapters])


@dataclass(frozen=True)
class _Slot:
    """One image of one request inside a forward pass."""

    request_index: int
    image_index: int


class Denoiser:
    """Transformer + scheduler + VAE decoder of one model variant."""

    def __init__(
        self,
        model: str,
        weights: str = "emulated",
        max_images_per_forward: int = 12,
        device: str = "auto",
        dtype: str = "auto",
        max_loaded_adapters: int = 8,
    ):
        if max_images_per_forward < 1:
            raise ValueError(f"max_images_per_forward must be at least 1, got {max_images_per_forward}.")
        self.variant = get_variant(model)
        self.weights = resolve_weights(self.variant, weights)
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.pipeline = load_pipeline(self.weights, self.device, self.dtype, text_encoder=None, tokenizer=None)
        self.max_images_per_forward = max_images_per_forward
        self.distilled = bool(self.pipeline.config.is_distilled)
        self.pixels_per_token = self.pipeline.vae_scale_factor * 2
        self.adapters = AdapterCache(self.pipeline, max_loaded_adapters)
        self._pipeline_lock = threading.Lock()
        self.linear_shapes = module_linear_shapes(self.pipeline.transformer)

    # -- validation -------------------------------------------------------------------

    def validate(self, request: GenerationRequest) -> None:
        request.validate()
        embedding = request.prompt
        expected_dim = self.pipeline.transformer.config.joint_attention_dim
        for name, candidate in (("prompt", embedding), ("negative_prompt", request.negative_prompt)):
            if candidate is None:
                continue
            if candidate.text_encoder_family != self.weights.text_encoder_family or (
                candidate.embedding_dim != expected_dim
            ):
                raise InvalidRequestError(
                    name,
                    f"embeddings come from the {candidate.text_encoder_family} encoder "
                    f"({candidate.embedding_dim} wide) but {self.variant.name} needs "
                    f"{self.weights.text_encoder_family} embeddings ({expected_dim} wide); encode the "
                    f"prompt with the {self.variant.name} text encoder.",
                )
        for adapter in request.adapters:
            try:
                check_compatible(adapter.id, inspect_adapter(Path(adapter.path)), self.variant.name, self.linear_shapes)
            except AdapterMismatch as mismatch:
                raise InvalidRequestError("loras", str(mismatch)) from None
        if self._uses_cfg(request) and request.negative_prompt is None:
            raise InvalidRequestError(
                "negative_prompt", "guidance > 1 on a non-distilled model needs the empty prompt's embedding."
            )

    def _uses_cfg(self, request: GenerationRequest) -> bool:
        return not self.distilled and self._guidance(request) > 1.0

    def _steps(self, request: GenerationRequest) -> int:
        return request.steps if request.steps is not None else self.weights.defaults.steps

    def _guidance(self, request: GenerationRequest) -> float:
        """Distilled models ignore guidance, so all their requests share one value (and passes)."""
        if self.distilled:
            return 1.0
        return request.guidance if request.guidance is not None else self.weights.defaults.guidance

    # -- generation -------------------------------------------------------------------

    def generate(
        self,
        requests: list[GenerationRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]:
        """Results in the order of `requests`. Progress is (request index, step, total steps).

        One call at a time per denoiser: the scheduler and the active adapters are pipeline state.
        """
        with self._pipeline_lock:
            return self._generate(requests, on_progress, should_cancel)

    def _generate(self, requests, on_progress, should_cancel) -> list[GenerationResult]:
        for request in requests:
            self.validate(request)
        seeds = [r.seed if r.seed is not None else random.randint(0, MAX_SEED) for r in requests]
        results = [
            GenerationResult(
                images=[None] * r.num_images,
                output_format=r.output_format,
                seed=seed,
                width=r.width,
                height=r.height,
                steps=self._steps(r),
                guidance=self._guidance(r),
                timings_s={"denoise": 0.0, "decode": 0.0},
            )
            for r, seed in zip(requests, seeds)
        ]
        chunks = self._plan_forward_passes(requests)
        chunks_per_request: dict[int, int] = defaultdict(int)
        for chunk in chunks:
            for request_index in {slot.request_index for slot in chunk}:
                chunks_per_request[request_index] += 1
        chunks_done: dict[int, int] = defaultdict(int)
        for chunk in chunks:
            live = [s for s in chunk if not (should_cancel and should_cancel(s.request_index))]
            cancelled = {s.request_index for s in chunk} - {s.request_index for s in live}
            for request_index in cancelled:
                results[request_index].cancelled = True
            if live:
                self._run_chunk(
                    requests, seeds, live, results, on_progress, should_cancel, chunks_per_request, chunks_done
                )
            for request_index in {slot.request_index for slot in chunk}:
                chunks_done[request_index] += 1
        for result in results:
            if result.cancelled:
                result.images = []
        return results

    def _plan_forward_passes(self, requests: list[GenerationRequest]) -> list[list[_Slot]]:
        """Group compatible requests, then pack them into passes, keeping a request whole where it fits."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            adapters = tuple(sorted((a.id, a.scale) for a in request.adapters))
            groups[(request.width, request.height, self._steps(request), self._guidance(request), adapters)].append(index)
        chunks: list[list[_Slot]] = []
        for indices in groups.values():
            current: list[_Slot] = []
            for index in indices:
                if current and len(current) + requests[index].num_images > self.max_images_per_forward:
                    chunks.append(current)
                    current = []
                for image_index in range(requests[index].num_images):
                    current.append(_Slot(index, image_index))
                    if len(current) == self.max_images_per_forward:
                        chunks.append(current)
                        current = []
            if current:
                chunks.append(current)
        return chunks

    def initial_noise(self, seed: int, width: int, height: int) -> torch.Tensor:
        """Packed-latent noise for one image, drawn on the CPU so every device agrees."""
        channels = self.pipeline.transformer.config.in_channels
        shape = (channels, height // self.pixels_per_token, width // self.pixels_per_token)
        generator = torch.Generator("cpu").manual_seed(seed)
        return torch.randn(shape, generator=generator, dtype=torch.float32)

    def _run_chunk(self, requests, seeds, slots, results, on_progress, should_cancel, chunks_per_request, chunks_done):
        first = requests[slots[0].request_index]
        steps, guidance = self._steps(first), self._guidance(first)
        request_indices = sorted({s.request_index for s in slots})
        prompt_embeds = torch.stack([requests[s.request_index].prompt.embeds for s in slots])
        negative_embeds = None
        if self._uses_cfg(first):
            negative_embeds = torch.stack([requests[s.request_index].negative_prompt.embeds for s in slots])
            negative_embeds = negative_embeds.to(self.device, self.dtype)
        noise = torch.stack(
            [self.initial_noise(seeds[s.request_index] + s.image_index, first.width, first.height) for s in slots]
        )

        def on_step_end(pipeline, step, _timestep, callback_kwargs):
            for request_index in request_indices:
                if on_progress:
                    done = chunks_done[request_index] * steps + step + 1
                    on_progress(request_index, done, steps * chunks_per_request[request_index])
            if should_cancel and all(should_cancel(i) for i in request_indices):
                raise GenerationCancelled()
            return callback_kwargs

        started = time.perf_counter()
        self.adapters.activate(first.adapters)
        try:
            with torch.inference_mode():
                latents = self.pipeline(
                    prompt_embeds=prompt_embeds.to(self.device, self.dtype),
                    negative_prompt_embeds=negative_embeds,
                    latents=noise.to(self.device, self.dtype),
                    width=first.width,
                    height=first.height,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    max_sequence_length=self.weights.max_sequence_length,
                    text_encoder_out_layers=self.weights.text_encoder_out_layers,
                    callback_on_step_end=on_step_end,
                    output_type="latent",
                    return_dict=False,
                )[0]
        except GenerationCancelled:
            for request_index in request_indices:
                results[request_index].cancelled = True
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # kernels run ahead of Python: time what they did
        denoised = time.perf_counter()
        for slot, image in zip(slots, self.decode(latents)):
            output_format = requests[slot.request_index].output_format
            results[slot.request_index].images[slot.image_index] = encode_image(image, output_format)
        decoded = time.perf_counter()
        for request_index in request_indices:
            result = results[request_index]
            result.timings_s["denoise"] += denoised - started
            result.timings_s["decode"] += decoded - denoised
            result.batch_images = max(result.batch_images, len(slots))
            result.batch_requests = max(result.batch_requests, len(request_indices))

    def decode(self, latents: torch.Tensor) -> list:
        """VAE decode of unpatchified latents (what the pipeline returns for output_type='latent')."""
        with torch.inference_mode():
            vae = self.pipeline.vae
            pixels = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
            return self.pipeline.image_processor.postprocess(pixels, output_type="pil")
