"""The "generate" kind: GenerationParams -> text encoder -> denoiser -> images, metered and moderated."""

from __future__ import annotations

import time

from deployments.contracts import DenoiseJob, DenoiseOutcome, InvalidRequestError
from serve_apps import metrics
from serve_apps.backpressure import when_room
from serve_apps.config import PricingArgs
from serve_apps.db import Claim
from serve_apps.jobs.kind import JobCancelled, JobContext, JobEnds
from serve_apps.records import GENERATE, JobRecord, JobStatus, Stage, Usage


class ContentModerated(JobEnds):
    """The safety checker flagged the output images; they were not stored."""

    def __init__(self, reason: str):
        super().__init__(JobStatus.CONTENT_MODERATED, reason)


class GenerateKind:
    name = GENERATE
    record_type = JobRecord

    def __init__(self, encoders: dict, denoisers: dict, pricing: PricingArgs):
        """`encoders`/`denoisers` map a model name to its deployment handle."""
        self.encoders = encoders
        self.denoisers = denoisers
        self.pricing = pricing

    async def run(self, record: JobRecord, claim: Claim, context: JobContext) -> None:
        try:
            outcome, encode_s, submitted_at = await self.encode_and_denoise(record, context)
        except InvalidRequestError as error:
            raise JobEnds(JobStatus.ERROR, f"invalid request: {error}") from None
        if outcome.cancelled:
            raise JobCancelled()
        cost_usd = outcome.gpu_seconds * self.pricing.usd_per_gpu_second
        if cost_usd:
            metrics.COST_USD.inc(cost_usd, tags={"model": record.model})
        record.images = outcome.images
        record.batch = outcome.batch
        record.timings_s = {
            "encode": encode_s,
            **outcome.timings_s,
            "cold_start": max(0.0, outcome.replica_ready_at - submitted_at),
            "total": time.time() - record.created_at,
        }
        record.usage = Usage(gpu_seconds=outcome.gpu_seconds, cost_usd=cost_usd, gpu_type=self.pricing.gpu_type)
        if outcome.moderated:
            raise ContentModerated(outcome.moderated)

    async def encode_and_denoise(self, record: JobRecord, context: JobContext) -> tuple[DenoiseOutcome, float, float]:
        """The one place the encoder and the denoiser meet: the prompt's embeddings (and the empty
        prompt's, for CFG), then the images. Returns the outcome, the encode seconds, and when the
        denoise job was submitted."""
        params, model = record.params, record.model
        await context.check_cancel()
        record.stage = Stage.ENCODING
        await context.save(record)
        encode_started = time.perf_counter()
        prompt = await when_room(lambda: self.encoders[model].encode.remote(params.prompt))
        negative = await when_room(lambda: self.encoders[model].encode.remote("")) if params.uses_cfg else None
        encode_s = time.perf_counter() - encode_started

        await context.check_cancel()
        record.stage = Stage.DENOISING
        await context.save(record)
        denoiser = self.denoisers[model]
        if params.adapters:
            denoiser = denoiser.options(multiplexed_model_id=params.adapter_set)
        job = DenoiseJob(params, prompt, negative, job_id=record.id)
        outcome = await when_room(lambda: denoiser.generate.remote(job))
        return outcome, encode_s, job.submitted_at
