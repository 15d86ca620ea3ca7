"""Thin Ray Serve wrappers over the plain model workers: batching, live knobs, storage, the live channel.

`@serve.batch` sits on a thin async method that hands the whole batch to the worker's pure
batch function in a thread, so the replica keeps collecting the next batch meanwhile; the denoiser's
answers each job as soon as its own images are stored (a batch generator). Each
wrapper takes the typed config whole, says its own deployment options, and takes its worker
class as an argument so tests can inject one. The builder turns them into deployments.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import ray
from PIL import Image
from ray import serve

from deployments.acceleration import Acceleration
from deployments.conditioning import stored_references
from deployments.contracts import DenoiseJob, DenoiseOutcome
from deployments.denoiser import Denoiser, GenerationResult
from deployments.embedding import PromptEmbedding
from deployments.encoder import TextEncoder
from lora.shapes import linear_shapes
from serve_apps import metrics
from serve_apps.config import AppArgs, denoiser_deployment_name, encoder_deployment_name
from serve_apps.live import LiveChannel, LiveObserver, open_channel
from serve_apps.security import safety
from serve_apps.store.storage import JobStore

logger = logging.getLogger("flux_serve.workers")

ADAPTER_SETS_PER_REPLICA = 8


OutcomeReady = Callable[[int, DenoiseOutcome], None]


async def outcomes_as_done(
    work: Callable[[list, OutcomeReady], object], jobs: list
) -> AsyncIterator[tuple[int, object]]:
    """Runs `work(jobs, on_outcome)` in a thread and yields each (index, outcome) as the thread hands it over;
    a failure of the work is raised here after the outcomes handed over before it."""
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue = asyncio.Queue()
    finished = object()

    async def run() -> None:
        try:
            await asyncio.to_thread(work, jobs, lambda *item: loop.call_soon_threadsafe(arrived.put_nowait, item))
        except Exception as error:
            arrived.put_nowait(error)
        else:
            arrived.put_nowait(finished)

    running = asyncio.create_task(run())
    while (item := await arrived.get()) is not finished:
        if isinstance(item, Exception):
            raise item
        yield item
    await running


async def drained(stream: AsyncIterator) -> None:
    async for _ in stream:
        pass


def job_gpu_seconds(result: GenerationResult, num_gpus: float) -> float:
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
    """One text encoder family; `model` is any served model of that family."""

    def __init__(self, args: AppArgs, model: str, encoder_class=TextEncoder):
        model_args = args.models[model]
        self.encoder = encoder_class(
            args.spec(model),
            weights=model_args.weights,
            cache_bytes=args.encoder.cache_bytes,
            device=model_args.device,
            dtype=model_args.dtype,
            truncate=model_args.acceleration.truncate_text_encoder,
        )

    @staticmethod
    def deployment_options(args: AppArgs, model: str) -> dict:
        encoder = args.encoder
        return {
            "name": encoder_deployment_name(args.spec(model).text_encoder.family),
            "ray_actor_options": {"num_cpus": encoder.num_cpus, "num_gpus": encoder.num_gpus},
            "autoscaling_config": encoder.autoscaling.model_dump(),
            "max_ongoing_requests": 2 * encoder.batching.max_batch_size,
            "max_queued_requests": encoder.max_queued_requests,
            "user_config": encoder.batching.model_dump(),
        }

    def reconfigure(self, user_config: dict) -> None:
        apply_batching(self.encode, user_config)

    @serve.batch
    async def encode(self, prompts: list[str]) -> list[PromptEmbedding]:
        """Each embedding says how long its batch took, so the job's timings keep `encode` although the
        embedding goes to the denoiser without passing the ingress."""
        started = time.perf_counter()
        embeddings = await asyncio.to_thread(self.encoder.encode, prompts)
        encode_s = time.perf_counter() - started
        return [replace(embedding, encode_s=encode_s) for embedding in embeddings]


class DenoiserServer:
    def __init__(self, args: AppArgs, model: str, denoiser_class=Denoiser, channel: LiveChannel | None = None):
        """`channel` carries progress and cancel (default: the cluster's when in Ray, else this process's)."""
        model_args = args.models[model]
        self.channel = channel or open_channel()
        self.model = model
        self.num_gpus = model_args.num_gpus
        self.store = JobStore(args.storage_url, args.storage_options)
        sources = args.adapter_sources()
        self.denoiser = denoiser_class(
            args.spec(model),
            weights=model_args.weights,
            max_images_per_forward=model_args.max_images_per_forward,
            max_pixels_per_forward=model_args.max_pixels_per_forward,
            device=model_args.device,
            dtype=model_args.dtype,
            max_loaded_adapters=args.loras.max_loaded_per_replica,
            adapter_files=lambda adapter: sources.fetch(adapter.source),
            reference_images=stored_references(self.store.load_reference),
            acceleration=Acceleration.from_settings(model_args.acceleration.model_dump()),
            reference_cache_bytes=model_args.reference_cache_bytes,
            deterministic=model_args.deterministic,
        )
        self.safety_checker = safety.load_checker(args.safety.checker)
        self.node_id = ray.get_runtime_context().get_node_id()[:12] if ray.is_initialized() else ""
        self.ready_at = time.time()
        self.background: set[asyncio.Task] = set()
        self.batch_wait_timeout_s = model_args.batching.batch_wait_timeout_s
        self.jobs_in_flight = 0
        metrics.COLD_STARTS.inc(tags={"model": model})
        metrics.WARMUP_SECONDS.observe(getattr(self.denoiser, "warmup_s", 0.0), tags={"model": model})

    @staticmethod
    def deployment_options(args: AppArgs, model: str) -> dict:
        model_args = args.models[model]
        return {
            "name": denoiser_deployment_name(model),
            "ray_actor_options": {"num_cpus": model_args.num_cpus, "num_gpus": model_args.num_gpus},
            "autoscaling_config": model_args.autoscaling.model_dump(),
            "max_ongoing_requests": 2 * model_args.batching.max_batch_size,
            "max_queued_requests": model_args.max_queued_requests,
            "user_config": model_args.batching.model_dump(),
        }

    def reconfigure(self, user_config: dict) -> None:
        apply_batching(self.generate_batched, user_config)
        self.batch_wait_timeout_s = float(user_config.get("batch_wait_timeout_s", self.batch_wait_timeout_s))

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of every Linear of the loaded transformer, built from its config on the meta device (the
        loaded one has adapters wrapped into its layers): what a LoRA must match, checked by the ingress."""
        return linear_shapes(dict(self.denoiser.pipeline.transformer.config))

    @serve.multiplexed(max_num_models_per_replica=ADAPTER_SETS_PER_REPLICA)
    async def adapter_set(self, key: str) -> str:
        """Routing bookkeeping only: Serve then sends requests with this key here first: an adapter set, or for
        a request with references and no adapters its first reference (GenerationParams.replica_affinity).

        The adapters themselves are loaded, and evicted, by the denoiser's AdapterCache; references are kept
        prepared by its reference cache (deployments/reference_cache.py).
        """
        return key

    async def generate(
        self, job: DenoiseJob, prompt: PromptEmbedding, negative: PromptEmbedding | None
    ) -> DenoiseOutcome:
        """One job, batched with others (`generate_batched`), answered as soon as its own images are stored: a job
        that shared a call with larger ones does not wait for their passes.

        The batch window is for company on its way: a job that finds the replica idle starts at once (alone, a
        user waits for the model, not for the window); one arriving while the replica works waits the window, as
        it would wait for the running pass anyway."""
        idle = self.jobs_in_flight == 0
        self.generate_batched.set_batch_wait_timeout_s(0.0 if idle else self.batch_wait_timeout_s)
        self.jobs_in_flight += 1
        try:
            stream = self.generate_batched(job, prompt, negative)
            async for outcome in stream:
                if outcome is not None:
                    self._background(drained(stream))  # its end comes with the batch's next yield: read, not left
                    return outcome
        finally:
            self.jobs_in_flight -= 1
        raise RuntimeError(f"job {job.job_id}: its batch ended without its outcome")

    def _background(self, work) -> None:
        """Run without waiting, keeping a reference until done (the event loop keeps only weak ones)."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    @serve.batch()  # called: the bare form refuses async generators (ray 2.60)
    async def generate_batched(
        self, jobs: list[DenoiseJob], prompts: list[PromptEmbedding], negatives: list[PromptEmbedding | None]
    ):
        """`prompts`/`negatives` are the encoder's responses, passed by the ingress unresolved
        (DeploymentResponse composition): Ray brings the embeddings here from the encoder, never through
        the ingress. Serve splits batches by multiplexed id, so one batch shares one adapter set.

        Yields the batch's list each time one job is done: its outcome there, None for jobs still running (their
        callers wait on), StopIteration for those already answered (Serve ends their streams)."""
        key = serve.get_multiplexed_model_id()
        if key:
            await self.adapter_set(key)
        jobs = [
            replace(job, prompt=prompt, negative_prompt=negative)
            for job, prompt, negative in zip(jobs, prompts, negatives)
        ]
        answered: set[int] = set()
        async for index, outcome in outcomes_as_done(self.generate_batch, jobs):
            job = jobs[index]
            encode_s = job.prompt.encode_s + (job.negative_prompt.encode_s if job.negative_prompt else 0.0)
            outcome.timings_s["queue"] = max(0.0, outcome.timings_s.get("queue", 0.0) - encode_s)
            outcome.timings_s["encode"] = encode_s
            yield [outcome if i == index else StopIteration if i in answered else None for i in range(len(jobs))]
            answered.add(index)

    def generate_batch(self, jobs: list[DenoiseJob], on_outcome: OutcomeReady | None = None) -> list[DenoiseOutcome]:
        """Denoise a batch (progress and cancel through the live channel), store each job's images as soon as
        they are made, hand its outcome to `on_outcome(index, outcome)` (from a thread), return them all."""
        started = time.time()
        observer = LiveObserver(self.channel, [job.job_id for job in jobs if job.job_id])
        observer.ask_first()
        outcomes: list[DenoiseOutcome | None] = [None] * len(jobs)

        def stored(index: int, result: GenerationResult) -> None:
            outcomes[index] = self._store_result(jobs[index], result, started)
            if on_outcome is not None:
                on_outcome(index, outcomes[index])

        self.denoiser.generate(jobs, observer, on_done=stored)
        return outcomes

    def _store_result(self, job: DenoiseJob, result: GenerationResult, started: float) -> DenoiseOutcome:
        stored_at = time.perf_counter()
        names = []
        moderated = self.output_refusal(job, result.images)
        for number, image in enumerate([] if moderated else result.images):
            name = f"{number}.{job.params.output_format}"
            self.store.save_image(job.job_id, name, image)
            names.append(name)
        timings = {"queue": max(0.0, started - job.submitted_at), **result.timings_s}
        timings["store"] = time.perf_counter() - stored_at
        gpu_seconds = job_gpu_seconds(result, self.num_gpus)
        metrics.record_job(self.model, result, gpu_seconds)
        return DenoiseOutcome(
            images=names,
            timings_s=timings,
            batch={"images": result.batch_images, "requests": result.batch_requests, "node": self.node_id},
            gpu_seconds=gpu_seconds,
            replica_ready_at=self.ready_at,
            cancelled=result.cancelled,
            moderated=moderated,
            manifest=result.manifest,
            cache={"references": result.reference_cache} if result.reference_cache else {},
        )

    def output_refusal(self, job: DenoiseJob, images: list[bytes]) -> str | None:
        """Why the safety checker (if one is configured) withholds these images; they are then not stored."""
        if self.safety_checker is None or not images:
            return None
        decoded = [Image.open(io.BytesIO(image)) for image in images]
        return safety.refusal(self.safety_checker, decoded, job.params.safety_tolerance, "output image")
