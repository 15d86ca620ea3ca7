"""The "generate" kind: GenerationParams -> text encoder -> denoiser -> images, metered and moderated."""

from __future__ import annotations

import asyncio
import time

from deployments.contracts import DenoiseJob, DenoiseOutcome, InvalidRequestError
from serve_apps import metrics
from serve_apps.config import PricingArgs
from serve_apps.jobs.backpressure import when_room
from serve_apps.jobs.deadlines import unless_queued_past_deadline
from serve_apps.jobs.kind import JobCancelled, JobContext, JobEnds
from serve_apps.jobs.records import GENERATE, JobRecord, JobStatus, Stage, Usage
from serve_apps.jobs.reruns import judge_rerun
from serve_apps.store import Claim
from serve_apps.store.storage import JobStore


class ContentModerated(JobEnds):
    """The safety checker flagged the output images; they were not stored."""

    def __init__(self, reason: str):
        super().__init__(JobStatus.CONTENT_MODERATED, reason)


class GenerateKind:
    name = GENERATE
    record_type = JobRecord

    def __init__(self, encoders: dict, denoisers: dict, pricing: PricingArgs, store: JobStore):
        """`encoders`/`denoisers` map a model name to its deployment handle; `store` holds the images a rerun's
        are compared with."""
        self.encoders = encoders
        self.denoisers = denoisers
        self.pricing = pricing
        self.store = store

    async def run(self, record: JobRecord, claim: Claim, context: JobContext) -> None:
        try:
            outcome, submitted_at = await self.encode_and_denoise(record, context)
        except InvalidRequestError as error:
            raise JobEnds(JobStatus.ERROR, f"invalid request: {error}") from None
        if outcome.cancelled:
            raise JobCancelled()
        cost_usd = outcome.gpu_seconds * self.pricing.usd_per_gpu_second
        if cost_usd:
            metrics.COST_USD.inc(cost_usd, tags={"model": record.model})
        record.images = outcome.images
        record.batch = outcome.batch
        record.manifest = outcome.manifest
        record.cache = outcome.cache
        record.timings_s = {
            **outcome.timings_s,
            "cold_start": max(0.0, outcome.replica_ready_at - submitted_at),
            "total": time.time() - record.created_at,
        }
        record.usage = Usage(gpu_seconds=outcome.gpu_seconds, cost_usd=cost_usd, gpu_type=self.pricing.gpu_type)
        if outcome.moderated:
            raise ContentModerated(outcome.moderated)
        if record.rerun is not None:
            record.rerun = await asyncio.to_thread(judge_rerun, self.store, record)

    async def encode_and_denoise(self, record: JobRecord, context: JobContext) -> tuple[DenoiseOutcome, float]:
        """The one place the encoder and the denoiser meet: the encoder's responses for the prompt (and the
        empty prompt, for CFG) go to the denoiser unresolved, so Ray moves the embeddings (megabytes a job
        at real size) from encoder to denoiser directly, never through this replica. Returns the outcome
        (its timings include `encode`) and when the denoise job was submitted."""
        params, model = record.params, record.model
        await context.check_cancel()
        record.stage = Stage.ENCODING
        await context.save(record)
        encoder, denoiser = self.encoders[model], self.denoisers[model]
        if params.replica_affinity:
            denoiser = denoiser.options(multiplexed_model_id=params.replica_affinity)
        job = DenoiseJob(params, None, None, job_id=record.id)

        async def handed_over():
            """Sent, then the stage written: from here the job is the workers'."""
            prompt = encoder.encode.remote(params.prompt)
            negative = encoder.encode.remote("") if params.uses_cfg else None
            response = denoiser.generate.remote(job, prompt, negative)
            record.stage = Stage.DENOISING
            await context.save(record)
            return await response

        # a full encoder or denoiser queue: the whole call again, later; still queued at its deadline: cancelled
        outcome = await unless_queued_past_deadline(record, context, when_room(handed_over))
        return outcome, job.submitted_at
