"""Thin Ray Serve wrappers over the plain model workers: batching, live knobs, storage.

`@serve.batch` sits on a thin async method that hands the whole batch to the worker's pure
batch function in a thread, so the replica keeps collecting the next batch meanwhile.
The builder turns these classes into deployments.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field

import ray
from ray import serve

from deployments.denoiser import Denoiser
from deployments.encoder import PromptEmbedding, TextEncoder
from deployments.params import AdapterRef, GenerationRequest
from lora.sources import fetch_adapter
from serve_apps import metrics
from serve_apps.storage import JobStore

CANCEL_POLL_S = 0.25
ADAPTER_SETS_PER_REPLICA = 8
PROGRESS_WRITE_S = 0.25


@dataclass
class DenoiseJob:
    job_id: str
    request: GenerationRequest
    submitted_at: float = field(default_factory=time.time)


def adapter_set_key(request: GenerationRequest) -> str:
    """The multiplexed model id of a request: its adapters, whatever their scales ('' for none)."""
    return "+".join(sorted(adapter.id for adapter in request.adapters))


@dataclass
class DenoiseOutcome:
    images: list[str]
    seed: int
    timings_s: dict[str, float]
    batch: dict[str, int]
    gpu_seconds: float = 0.0
    replica_ready_at: float = 0.0
    node_id: str = ""
    cancelled: bool = False


def job_gpu_seconds(result, num_gpus: float) -> float:
    """The job's share of its passes: their wall time x the replica's GPU fraction x its share of images."""
    busy_s = result.timings_s.get("denoise", 0.0) + result.timings_s.get("decode", 0.0)
    share = len(result.images) / result.batch_images if result.batch_images else 0.0
    return busy_s * num_gpus * share


def apply_batching(batched_method, user_config: dict) -> None:
    """Apply `user_config` {max_batch_size, batch_wait_timeout_s} to a @serve.batch method."""
    if "max_batch_size" in user_config:
        batched_method.set_max_batch_size(int(user_config["max_batch_size"]))
    if "batch_wait_timeout_s" in user_config:
        batched_method.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))


class EncoderServer:
    def __init__(self, model: str, weights: str, cache_size: int, device: str = "auto", dtype: str = "auto"):
        self.encoder = TextEncoder(model, weights=weights, cache_size=cache_size, device=device, dtype=dtype)

    def reconfigure(self, user_config: dict) -> None:
        apply_batching(self.encode, user_config)

    @serve.batch
    async def encode(self, prompts: list[str]) -> list[PromptEmbedding]:
        return await asyncio.to_thread(self.encoder.encode, prompts)


class DenoiserServer:
    def __init__(
        self,
        model: str,
        weights: str,
        storage_url: str,
        storage_options: dict | None = None,
        max_images_per_forward: int = 12,
        device: str = "auto",
        dtype: str = "auto",
        max_loaded_adapters: int = 8,
        lora_roots: list[str] | None = None,
        num_gpus: float = 0.0,
    ):
        self.model = model
        self.num_gpus = num_gpus
        self.denoiser = Denoiser(
            model,
            weights=weights,
            max_images_per_forward=max_images_per_forward,
            device=device,
            dtype=dtype,
            max_loaded_adapters=max_loaded_adapters,
        )
        self.store = JobStore(storage_url, storage_options)
        self.storage_options = storage_options or {}
        self.lora_roots = lora_roots or []
        self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        self.ready_at = time.time()
        metrics.COLD_STARTS.inc(tags={"model": model})
        self._cancel_checked_at: dict[str, tuple[float, bool]] = {}

    def reconfigure(self, user_config: dict) -> None:
        apply_batching(self.generate, user_config)

    @serve.multiplexed(max_num_models_per_replica=ADAPTER_SETS_PER_REPLICA)
    async def adapter_set(self, key: str) -> str:
        """Routing bookkeeping only: Serve then sends requests with this adapter set here first.

        The adapters themselves are loaded, and evicted, by the denoiser's AdapterCache.
        """
        return key

    @serve.batch
    async def generate(self, jobs: list[DenoiseJob]) -> list[DenoiseOutcome]:
        """Serve splits batches by multiplexed id, so one batch shares one adapter set."""
        key = serve.get_multiplexed_model_id()
        if key:
            await self.adapter_set(key)
        return await asyncio.to_thread(self.generate_batch, jobs)

    def with_local_adapters(self, request: GenerationRequest) -> GenerationRequest:
        """Adapter sources (s3://, hub ids) fetched into this machine's cache."""
        if not request.adapters:
            return request
        local = tuple(
            AdapterRef(a.id, str(fetch_adapter(a.path, self.lora_roots, storage_options=self.storage_options)), a.scale)
            for a in request.adapters
        )
        return dataclasses.replace(request, adapters=local)

    def cancel_requested(self, job_id: str) -> bool:
        """Looked up in storage at most every CANCEL_POLL_S per job, so object stores see few calls."""
        now = time.monotonic()
        checked_at, cancelled = self._cancel_checked_at.get(job_id, (0.0, False))
        if not cancelled and now - checked_at >= CANCEL_POLL_S:
            cancelled = self.store.is_cancel_requested(job_id)
            self._cancel_checked_at[job_id] = (now, cancelled)
        return cancelled

    def generate_batch(self, jobs: list[DenoiseJob]) -> list[DenoiseOutcome]:
        """Denoise a batch, write progress and images to storage, return what each job needs."""
        started = time.time()

        last_written: dict[int, float] = {}

        def on_progress(index: int, step: int, total: int) -> None:
            """Written at most every PROGRESS_WRITE_S per job, and always at the last step."""
            now = time.monotonic()
            if step == total or now - last_written.get(index, 0.0) >= PROGRESS_WRITE_S:
                last_written[index] = now
                self.store.save_progress(jobs[index].job_id, {"step": step, "total": total, "updated_at": time.time()})

        def should_cancel(index: int) -> bool:
            return self.cancel_requested(jobs[index].job_id)

        results = self.denoiser.generate(
            [self.with_local_adapters(job.request) for job in jobs], on_progress=on_progress, should_cancel=should_cancel
        )
        outcomes = []
        for job, result in zip(jobs, results):
            stored_at = time.perf_counter()
            names = []
            for number, image in enumerate(result.images):
                name = f"{number}.{result.output_format}"
                self.store.save_image(job.job_id, name, image)
                names.append(name)
            timings = {"queue": max(0.0, started - job.submitted_at), **result.timings_s}
            timings["store"] = time.perf_counter() - stored_at
            outcome = DenoiseOutcome(
                images=names,
                seed=result.seed,
                timings_s=timings,
                batch={"images": result.batch_images, "requests": result.batch_requests},
                gpu_seconds=job_gpu_seconds(result, self.num_gpus),
                replica_ready_at=self.ready_at,
                node_id=self.node_id,
                cancelled=result.cancelled,
            )
            outcomes.append(outcome)
            metrics.record_job(self.model, result, outcome.gpu_seconds)
        for job in jobs:
            self._cancel_checked_at.pop(job.job_id, None)
        return outcomes
