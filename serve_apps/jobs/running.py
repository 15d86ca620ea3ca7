"""Running a job on this replica: attempts, timeout, heartbeat, the final write, webhooks.

Every write carries the job's `Claim` (its lease's fencing token): once another replica
adopted, cancelled or finished the job, this one's writes fail with LeaseLost and it stops
quietly, without a second final status, webhook or limiter release.
"""

from __future__ import annotations

import asyncio
import logging
import time

from deployments.contracts import DenoiseJob, InvalidRequestError
from serve_apps import metrics
from serve_apps.backpressure import when_room
from serve_apps.config import AppArgs
from serve_apps.db import Claim, JobsRepository, LeaseLost
from serve_apps.records import JobRecord, JobStatus, Stage, Usage, WebhookDelivery
from serve_apps.storage import JobStore
from serve_apps.views import JobViews
from serve_apps.webhooks import deliver

logger = logging.getLogger("flux_serve.jobs")

FINAL_WRITE_ATTEMPTS = 5
FINAL_WRITE_BACKOFF_S = 0.5


class JobCancelled(Exception):
    """The job was cancelled before it reached the denoiser."""


class ContentModerated(Exception):
    """The safety checker flagged the output images; they were not stored."""


class JobRunner:
    def __init__(
        self,
        db: JobsRepository,
        store: JobStore,
        encoders: dict,
        denoisers: dict,
        args: AppArgs,
        views: JobViews,
        limiter=None,
    ):
        """`encoders`/`denoisers` map a model name to its deployment handle."""
        self.db = db
        self.store = store
        self.encoders = encoders
        self.denoisers = denoisers
        self.args = args
        self.views = views
        self.limiter = limiter
        self.tasks: dict[str, asyncio.Task] = {}
        self.in_flight: dict[str, int] = {}

    async def save(self, claim: Claim, record: JobRecord) -> None:
        await asyncio.to_thread(self.db.save, claim, record.model_copy(deep=True))

    def start(self, record: JobRecord, claim: Claim) -> None:
        task = asyncio.create_task(self._run(record, claim))
        self.tasks[record.id] = task
        self._count_in_flight(record.model, +1)

        def done(_task) -> None:
            self.tasks.pop(record.id, None)
            self._count_in_flight(record.model, -1)

        task.add_done_callback(done)

    async def wait(self, job_id: str) -> None:
        """Until a job this replica runs has ended (the synchronous OpenAI route)."""
        task = self.tasks.get(job_id)
        if task is not None:
            await asyncio.shield(task)

    def _count_in_flight(self, model: str, change: int) -> None:
        self.in_flight[model] = self.in_flight.get(model, 0) + change
        metrics.QUEUE_DEPTH.set(self.in_flight[model], tags={"model": model})

    async def _run(self, record: JobRecord, claim: Claim) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(claim))
        try:
            outcome = await self._attempts(record, claim)
        except LeaseLost:
            logger.warning("job %s: another replica took it over or ended it; this one stops", record.id)
            return
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)  # no heartbeat after the final write
        await self.end(claim, record, *outcome)

    async def _attempts(self, record: JobRecord, claim: Claim) -> tuple[JobStatus, str | None]:
        """Run attempts until one ends the job; the final status and reason (written by the caller)."""
        while True:
            record.attempts += 1
            try:
                await asyncio.wait_for(self._attempt(record, claim), timeout=self.args.jobs.timeout_s)
                return JobStatus.READY, None
            except JobCancelled:
                return JobStatus.CANCELLED, "cancelled by the user"
            except ContentModerated as flagged:
                return JobStatus.CONTENT_MODERATED, str(flagged)
            except InvalidRequestError as error:
                return JobStatus.ERROR, f"invalid request: {error}"
            except asyncio.TimeoutError:
                await asyncio.to_thread(self.store.request_cancel, record.id)  # stop the work in the replica too
                return JobStatus.ERROR, f"timed out after {self.args.jobs.timeout_s:.0f} s"
            except LeaseLost:
                raise
            except Exception as error:  # a dead replica, lost actor, or a crash in a worker
                cause = getattr(error, "cause", None) or error  # a RayTaskError carries the worker's own error
                reason = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
                if record.attempts >= self.args.jobs.max_attempts:
                    return JobStatus.ERROR, f"worker failed after {record.attempts} attempt(s): {reason}"
                logger.warning("job %s attempt %d failed (%s); retrying", record.id, record.attempts, reason)

    async def _heartbeat(self, claim: Claim) -> None:
        """Renew the lease; a failed write is retried at the next beat, a lost lease stops the job."""
        while True:
            await asyncio.sleep(self.args.jobs.heartbeat_s)
            try:
                await asyncio.to_thread(self.db.heartbeat, claim)
            except LeaseLost:
                task = self.tasks.get(claim.job_id)
                if task is not None:
                    task.cancel()
                return
            except Exception:
                logger.exception("job %s: heartbeat write failed; retrying at the next beat", claim.job_id)

    async def _check_cancel(self, job_id: str) -> None:
        if await asyncio.to_thread(self.store.is_cancel_requested, job_id):
            raise JobCancelled()

    async def _attempt(self, record: JobRecord, claim: Claim) -> None:
        params, model = record.params, record.model
        await self._check_cancel(record.id)
        record.stage = Stage.ENCODING
        await self.save(claim, record)
        encode_started = time.perf_counter()
        prompt = await when_room(lambda: self.encoders[model].encode.remote(params.prompt))
        negative = await when_room(lambda: self.encoders[model].encode.remote("")) if params.uses_cfg else None
        encode_s = time.perf_counter() - encode_started

        await self._check_cancel(record.id)
        record.stage = Stage.DENOISING
        await self.save(claim, record)
        denoiser = self.denoisers[model]
        if params.adapters:
            denoiser = denoiser.options(multiplexed_model_id=params.adapter_set)
        job = DenoiseJob(params, prompt, negative, job_id=record.id)
        outcome = await when_room(lambda: denoiser.generate.remote(job))
        if outcome.cancelled:
            raise JobCancelled()
        cost_usd = outcome.gpu_seconds * self.args.pricing.usd_per_gpu_second
        if cost_usd:
            metrics.COST_USD.inc(cost_usd, tags={"model": model})
        record.images = outcome.images
        record.batch = outcome.batch
        record.timings_s = {
            "encode": encode_s,
            **outcome.timings_s,
            "cold_start": max(0.0, outcome.replica_ready_at - job.submitted_at),
            "total": time.time() - record.created_at,
        }
        record.usage = Usage(gpu_seconds=outcome.gpu_seconds, cost_usd=cost_usd, gpu_type=self.args.pricing.gpu_type)
        if outcome.moderated:
            raise ContentModerated(outcome.moderated)

    async def end(self, claim: Claim, record: JobRecord, status: JobStatus, reason: str | None = None) -> None:
        """The final write, retried on its own (a failed write never reruns the GPU work)."""
        if reason:
            logger.warning("job %s ended %s: %s", record.id, status.value, reason)
        record.status, record.stage, record.error = status, Stage.DONE, reason
        for attempt in range(1, FINAL_WRITE_ATTEMPTS + 1):
            try:
                await self.save(claim, record)
                break
            except LeaseLost:
                logger.warning("job %s: ended elsewhere first; this replica's result is dropped", record.id)
                return
            except Exception:
                if attempt == FINAL_WRITE_ATTEMPTS:
                    raise
                logger.exception("job %s: final write failed; retrying", record.id)
                await asyncio.sleep(FINAL_WRITE_BACKOFF_S * attempt)
        self.after_finish(record)

    def after_finish(self, record: JobRecord) -> None:
        if self.limiter is not None:
            self.limiter.release.remote(record.key_id, record.id)
        if record.webhook:
            asyncio.create_task(self._send_webhook(record))

    async def _send_webhook(self, record: JobRecord) -> None:
        webhook = record.webhook

        async def remember(attempt: dict) -> None:
            webhook.deliveries.append(WebhookDelivery(**attempt))
            await asyncio.to_thread(self.db.update_webhook, record.model_copy(deep=True))

        await deliver(
            webhook.url,
            self.views.webhook_payload(record),
            webhook.secret,
            webhook_id=record.id,
            max_attempts=self.args.webhooks.max_attempts,
            initial_backoff_s=self.args.webhooks.initial_backoff_s,
            timeout_s=self.args.webhooks.timeout_s,
            allowed_private_hosts=self.args.network.allowed_private_hosts,
            on_attempt=remember,
        )
