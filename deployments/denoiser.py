"""Denoiser: batches of prompt embeddings -> encoded images, loaded without the text encoder.

Requests that can share a forward pass (same size, steps, guidance, adapters and reference images) run as one latent
batch, at most `max_images_per_forward` images and `max_pixels_per_forward` pixels at a time,
and the VAE decodes one image at a time, so 12 images at 2048x2048 run in several passes. Each image's starting noise is
drawn on the CPU from its own seed, so it is the same whether its request runs alone or inside a batch, on any device;
the pixels may still differ in their last bit with the batch (its kernels round differently), unless the model is
served `deterministic` (deployments/determinism.py): then every request runs in passes of its own.
"""

from __future__ import annotations

import gc
import inspect
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from deployments.acceleration import Acceleration, accelerate_denoiser, applying, start_with_fallback
from deployments.adapter_cache import AdapterCache, AdapterFiles
from deployments.conditioning import Conditioning, ReferenceLoader, group_key, no_references
from deployments.contracts import DenoiseJob, GenerationParams, InvalidRequestError
from deployments.determinism import deterministic_kernels, prepare_process
from deployments.finishing import RequestDone, RequestFinisher
from deployments.images import ImageEncoder, to_uint8
from deployments.kv_reuse import ReferenceKV, kv_key
from deployments.loading import load_pipeline, pick_device, pick_dtype, resolve_weights
from deployments.manifest import Manifest, Provenance
from deployments.passes import images_per_pass, pack_passes
from deployments.previews import pass_previews, preview_map_for
from deployments.progress import Cancelled, StepClock, StepHook, StepObserver
from deployments.reference_cache import REFERENCE_CACHE_BYTES, Preparation, PreparedReferences, note_preparation
from deployments.registry import VariantSpec, spec_of


def accepted_arguments(pipeline, arguments: dict) -> dict:
    """The arguments this pipeline's call takes. One it does not take must be unset (None): a request
    needing it should have been refused at submit by the variant's capabilities."""
    accepted = inspect.signature(type(pipeline).__call__).parameters
    refused = sorted(name for name, value in arguments.items() if name not in accepted and value is not None)
    if refused:
        raise InvalidRequestError(
            refused[0], f"{type(pipeline).__name__} does not take {', '.join(refused)}; send this to another model."
        )
    return {name: value for name, value in arguments.items() if name in accepted}


@dataclass
class GenerationResult:
    """Images of one request; `timings_s` holds denoise and decode (VAE + image encoding)."""

    params: GenerationParams
    images: list[bytes]
    timings_s: dict[str, float] = field(default_factory=lambda: {"denoise": 0.0, "decode": 0.0})
    batch_images: int = 0
    batch_requests: int = 0
    cancelled: bool = False
    manifest: Manifest | None = None  # what made its images (deployments/manifest.py)
    reference_cache: str | None = None  # "hit": its references came prepared (deployments/reference_cache.py)


@dataclass(frozen=True)
class _Slot:
    """One image of one request inside a forward pass."""

    request_index: int
    image_index: int


def _requests(slots: list[_Slot]) -> tuple[int, ...]:
    """The request indices of these slots, each once, in order."""
    return tuple(sorted({slot.request_index for slot in slots}))


@dataclass(frozen=True)
class ForwardPass:
    """One latent batch of a `generate` call: its images (slots into `jobs`, all sharing size, steps,
    guidance, adapters and references) and the step hook that reports and cancels them."""

    jobs: list[DenoiseJob]
    slots: list[_Slot]
    hook: StepHook

    @property
    def params(self) -> GenerationParams:
        return self.jobs[self.slots[0].request_index].params

    @property
    def requests(self) -> tuple[int, ...]:
        return _requests(self.slots)


@dataclass(frozen=True)
class PassOutput:
    """What a pass that ran to its end made: when it started and finished denoising, and its images'
    futures of (encoded bytes, done at), in slot order."""

    started_at: float
    denoised_at: float
    encoded: list
    references: Preparation | None = None


class Denoiser:
    """Transformer + scheduler + VAE decoder of one model variant.

    It trusts `GenerationParams` (the ingress decided every default, the seed, CFG and the
    adapters); it checks only what it alone knows: that the embeddings fit its transformer.
    """

    def __init__(
        self,
        model: str | VariantSpec,
        weights: str = "emulated",
        max_images_per_forward: int = 12,
        max_pixels_per_forward: int = 12 * 1024 * 1024,
        device: str = "auto",
        dtype: str = "auto",
        max_loaded_adapters: int = 8,
        adapter_files: AdapterFiles = lambda adapter: Path(adapter.source),
        reference_images: ReferenceLoader = no_references,
        acceleration: Acceleration | None = None,
        reference_cache_bytes: int = REFERENCE_CACHE_BYTES,
        deterministic: bool = False,
    ):
        """`deterministic`: each request in passes of its own and deterministic kernels, so a rerun makes the same
        bytes whoever else was queued (deployments/determinism.py)."""
        if max_images_per_forward < 1:
            raise ValueError(f"max_images_per_forward must be at least 1, got {max_images_per_forward}.")
        self.variant = spec_of(model)
        self.weights = resolve_weights(self.variant, weights)
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.deterministic = deterministic
        if deterministic:
            prepare_process(self.device)
        names = (self.variant.name, self.variant.base_name, weights)
        self.provenance = Provenance(*names, self.weights, self.device.type, str(self.dtype).removeprefix("torch."))
        self.pipeline = load_pipeline(self.weights, self.device, self.dtype, text_encoder=None, tokenizer=None)
        self.preview_map = preview_map_for(self.pipeline, self.weights.source)
        self.max_images_per_forward = max_images_per_forward
        self.max_pixels_per_forward = max_pixels_per_forward
        self.pixels_per_token = self.pipeline.vae_scale_factor * 2
        # 1.0 turns CFG off in a pipeline that takes guidance; one that takes none is given none
        self.no_guidance = 1.0 if self.variant.capabilities.guidance else None
        self.adapters = AdapterCache(self.pipeline, max_loaded_adapters, adapter_files)
        prepared = PreparedReferences(self.variant.name, reference_cache_bytes)
        self.conditioning = Conditioning(self.pipeline, reference_images, prepared)
        self._pipeline_lock = threading.Lock()
        self.image_encoder: ImageEncoder | None = None
        self.reference_cache_bytes = reference_cache_bytes
        self.reference_kv = self.keep_reference_kv()
        requested = (acceleration or Acceleration()).resolve(self.device)
        self.acceleration, self.warmup_s = start_with_fallback(self, requested)

    def keep_reference_kv(self) -> ReferenceKV | None:
        """A KV variant keeps its references' keys and values across jobs (deployments/kv_reuse.py)."""
        if not self.variant.capabilities.kv_reference_cache:
            return None
        return ReferenceKV(self.pipeline.transformer, self.reference_cache_bytes)

    @property
    def defaults(self):
        return self.weights.defaults

    @property
    def active_speedups(self) -> tuple[str, ...]:
        """The speed-ups this replica really runs with: those asked for (or `auto` on here) that did not fail."""
        return self.acceleration.speedups

    # -- start ------------------------------------------------------------------------

    def apply_acceleration(self, acceleration: Acceleration) -> None:
        """The image encoder and the speed-ups on the loaded pipeline; SpeedupFailed names one that raised."""
        self.acceleration = acceleration  # what the manifests name, warm-up's included
        with applying("gpu_jpeg"):
            self.image_encoder = ImageEncoder(
                acceleration.encode_threads, acceleration.png_compress_level, acceleration.gpu_jpeg
            )
        accelerate_denoiser(self.pipeline, acceleration, self.device)

    def reload_pipeline(self) -> None:
        """The pipeline fresh from the weights, for a start without a speed-up that failed; the old one is let go
        first, so the two never share the GPU's memory."""
        if self.image_encoder is not None:
            self.image_encoder.close()
        max_adapters, adapter_files = self.adapters.loaded.maxsize, self.adapters.adapter_files
        reference_images, prepared = self.conditioning.load, self.conditioning.prepared
        prepared.tensors.clear()  # made by the pipeline let go
        self.pipeline = self.adapters = self.conditioning = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.pipeline = load_pipeline(self.weights, self.device, self.dtype, text_encoder=None, tokenizer=None)
        self.adapters = AdapterCache(self.pipeline, max_adapters, adapter_files)
        self.conditioning = Conditioning(self.pipeline, reference_images, prepared)
        self.reference_kv = self.keep_reference_kv()

    # -- validation -------------------------------------------------------------------

    def check_embeddings(self, job: DenoiseJob) -> None:
        expected_dim = self.pipeline.transformer.config.joint_attention_dim
        for name, candidate in (("prompt", job.prompt), ("negative_prompt", job.negative_prompt)):
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
        if job.params.uses_cfg and job.negative_prompt is None:
            raise InvalidRequestError(
                "negative_prompt", "guidance > 1 on a non-distilled model needs the empty prompt's embedding."
            )

    # -- generation -------------------------------------------------------------------

    def generate(
        self, jobs: list[DenoiseJob], observer: StepObserver | None = None, on_done: RequestDone | None = None
    ) -> list[GenerationResult]:
        """Results in the order of `jobs`. At every step `observer` gets each job's `Progress` (a job without
        an id is named `request-<index>`) and is asked whether to stop; a pass stops once all its jobs were.
        `on_done(index, result)` is called, on a thread of its own, as each request is done (its last pass ran,
        its images encoded), while later passes of the call still run.

        One call at a time per denoiser: the scheduler and the active adapters are pipeline state. Images are
        encoded in a thread; the lock is released before waiting for them, so the next call can start its pass.
        """
        results = [GenerationResult(job.params, [None] * job.params.num_images) for job in jobs]
        finisher = RequestFinisher(results, on_done)
        try:
            with self._pipeline_lock, deterministic_kernels(self.deterministic):
                self._generate(jobs, observer, finisher)
        except BaseException:
            finisher.close()
            raise
        return finisher.wait()

    def _generate(self, jobs: list[DenoiseJob], observer: StepObserver | None, finisher: RequestFinisher) -> None:
        for job in jobs:
            self.check_embeddings(job)
        results = finisher.results
        job_ids = [job.job_id or f"request-{index}" for index, job in enumerate(jobs)]
        chunks = self._plan_forward_passes([job.params for job in jobs])
        last_pass = {index: number for number, chunk in enumerate(chunks) for index in _requests(chunk)}
        clock = StepClock([(jobs[chunk[0].request_index].params.steps, _requests(chunk)) for chunk in chunks])
        encoding: dict[int, list] = defaultdict(list)  # per request: (image index, future of (bytes, at), denoised at)
        for pass_index, chunk in enumerate(chunks):
            live = [s for s in chunk if not (observer and observer.cancel_requested(job_ids[s.request_index]))]
            for request_index in set(_requests(chunk)) - set(_requests(live)):
                results[request_index].cancelled = True
            if live:
                hook = StepHook(clock, pass_index, {index: job_ids[index] for index in _requests(live)}, observer)
                forward = ForwardPass(jobs, live, hook)
                ran = self._run_chunk(forward)
                for request_index in forward.requests:
                    result = results[request_index]
                    if ran is None:
                        result.cancelled = True
                        continue
                    result.timings_s["denoise"] += ran.denoised_at - ran.started_at
                    note_preparation(result, ran.references)
                    result.batch_images = max(result.batch_images, len(live))
                    result.batch_requests = max(result.batch_requests, len(forward.requests))
                for slot, future in zip(live, ran.encoded) if ran is not None else ():
                    encoding[slot.request_index].append((slot.image_index, future, ran.denoised_at))
            for request_index in _requests(chunk):
                if last_pass[request_index] == pass_index:
                    result = results[request_index]
                    manifest = None if result.cancelled else self.manifest(result.params)
                    finisher.finish(request_index, encoding.pop(request_index, []), manifest)

    def _plan_forward_passes(self, params: list[GenerationParams]) -> list[list[_Slot]]:
        """Compatible requests share passes (in deterministic mode, none do), as deployments/passes.py packs them."""
        keys = [
            (p.width, p.height, p.steps, p.guidance, tuple(sorted((a.id, a.scale) for a in p.adapters)), group_key(p))
            for p in params
        ]
        packed = pack_passes(
            keys,
            [p.num_images for p in params],
            lambda index: self.images_per_pass(params[index]),
            shared=not self.deterministic,
        )
        return [[_Slot(request, image) for request, image in chunk] for chunk in packed]

    def images_per_pass(self, params: GenerationParams) -> int:
        return images_per_pass(params.width, params.height, self.max_images_per_forward, self.max_pixels_per_forward)

    def initial_noise(self, seed: int, width: int, height: int) -> torch.Tensor:
        """Packed-latent noise for one image, drawn on the CPU so every device agrees."""
        channels = self.pipeline.transformer.config.in_channels
        shape = (channels, height // self.pixels_per_token, width // self.pixels_per_token)
        generator = torch.Generator("cpu").manual_seed(seed)
        return torch.randn(shape, generator=generator, dtype=torch.float32)

    def _run_chunk(self, forward: ForwardPass) -> PassOutput | None:
        """Denoise one pass and hand its images to the encoder thread; None if it was cancelled."""
        jobs, slots, first = forward.jobs, forward.slots, forward.params
        prompt_embeds = torch.stack([jobs[s.request_index].prompt.embeds for s in slots])
        negative_embeds = None
        if first.uses_cfg:
            negative_embeds = torch.stack([jobs[s.request_index].negative_prompt.embeds for s in slots])
            negative_embeds = negative_embeds.to(self.device, self.dtype)
        noise = torch.stack(
            [
                self.initial_noise(jobs[s.request_index].params.seed + s.image_index, first.width, first.height)
                for s in slots
            ]
        )
        started = time.perf_counter()
        self.adapters.activate(first.adapters)
        pipeline, images_in = self.conditioning.inputs(first)  # references (and a mask) are shared by the pass
        if self.reference_kv is not None:
            self.reference_kv.expect(kv_key(first) if first.references else None)
        forward.hook.start(pass_previews(self.preview_map, forward, noise))
        try:
            with torch.inference_mode():
                arguments = {
                    "prompt_embeds": prompt_embeds.to(self.device, self.dtype),
                    "negative_prompt_embeds": negative_embeds,
                    "latents": noise.to(self.device, self.dtype),
                    "width": first.width,
                    "height": first.height,
                    "num_inference_steps": first.steps,
                    "guidance_scale": first.guidance if first.guidance is not None else self.no_guidance,
                    "max_sequence_length": self.weights.max_sequence_length,
                    "text_encoder_out_layers": self.weights.text_encoder_out_layers,
                    "callback_on_step_end": forward.hook,
                    **images_in,
                }
                latents = pipeline(**accepted_arguments(pipeline, arguments), output_type="latent", return_dict=False)[
                    0
                ]
        except Cancelled:
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # kernels run ahead of Python: time what they did
        denoised = time.perf_counter()
        images = self.conditioning.keep_unmasked(first, self.decode(latents))
        encoded = [
            self.image_encoder.submit(pixels, params.output_format, self.manifest(params, slot.image_index).to_json())
            for slot, pixels in zip(slots, images)
            for params in [jobs[slot.request_index].params]
        ]
        preparation = self.conditioning.preparation()
        if preparation is not None and self.reference_kv is not None and self.reference_kv.hit is not None:
            preparation = replace(preparation, hit=preparation.hit and self.reference_kv.hit)
        return PassOutput(started, denoised, encoded, preparation)

    def manifest(self, params: GenerationParams, image: int | None = None) -> Manifest:
        """What makes this request's images (one image's, given its index): in each file and in the job record."""
        job = self.provenance.manifest(params, self.adapters.sha256, self.active_speedups)
        return job if image is None else job.for_image(image)

    def decode(self, latents: torch.Tensor) -> list[torch.Tensor]:
        """VAE decode of unpatchified latents (what the pipeline returns for output_type='latent') into uint8
        (height, width, 3) tensors on the device, one image at a time: the decoder's activations are about 2 GB
        per 2048x2048 image, too many for a batch of 12."""
        images = []
        denormalize = self.pipeline.image_processor.config.do_normalize
        with torch.inference_mode():
            vae = self.pipeline.vae
            for latent in latents.split(1):
                pixels = vae.decode(latent.to(vae.dtype), return_dict=False)[0]
                images += to_uint8(pixels, denormalize).unbind(0)
        return images
