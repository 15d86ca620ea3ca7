"""JobService: durable async jobs from submit to a final status, whatever dies on the way.

A job is a record in storage. The ingress replica that owns it runs encode -> denoise and
refreshes a heartbeat while it waits. If a denoiser replica dies under a job, the attempt
fails and the job is retried up to `max_attempts`, then ends Error with the reason. If the
ingress replica itself dies, the heartbeat stops: any ingress replica that sees the job
stale (on a status read or in its periodic sweep) adopts and retries it. No job stays
Pending forever. Seeds are drawn at submit, so a retry makes the same images.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
import uuid

from deployments.params import MAX_SEED, AdapterRef, GenerationRequest, InvalidRequestError
from lora.registry import AdapterError, AdapterRegistry, add_trigger_words, trigger_warnings
from serve_apps import metrics
from serve_apps.config import AppArgs
from serve_apps.moderation import PromptPolicy
from serve_apps.protocol import GenerateRequest, JobStatus
from serve_apps.storage import JobStore, new_job_id
from serve_apps.views import JobViews
from serve_apps.webhooks import deliver
from serve_apps.workers import DenoiseJob, adapter_set_key

logger = logging.getLogger("flux_serve.jobs")

FINAL_STATUSES = {JobStatus.READY.value, JobStatus.ERROR.value, JobStatus.CANCELLED.value, JobStatus.REQUEST_MODERATED.value}


class JobCancelled(Exception):
    """The job was cancelled before it reached the denoiser."""


class LimitExceeded(Exception):
    def __init__(self, reason: str, retry_after_s: int):
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class JobService:
    def __init__(
        self, store: JobStore, encoders: dict, denoisers: dict, args: AppArgs, defaults: dict, views: JobViews,
        limiter=None, adapters: AdapterRegistry | None = None,
    ):
        """`encoders`/`denoisers` map a model name to its deployment handle, `defaults` to its
        GenerationDefaults; `limiter` is the KeyLimiter deployment handle (None: no limits)."""
        self.store = store
        self.adapters = adapters
        self.views = views
        self.encoders = encoders
        self.denoisers = denoisers
        self.args = args
        self.defaults = defaults
        self.limiter = limiter
        self.policy = PromptPolicy(args.moderation.blocked_patterns)
        self.replica_id = uuid.uuid4().hex[:12]
        self.tasks: dict[str, asyncio.Task] = {}
        self.in_flight: dict[str, int] = {}
        self._sweeper: asyncio.Task | None = None

    # -- storage, off the event loop ----------------------------------------------------

    async def _save(self, record: dict) -> None:
        record["updated_at"] = time.time()
        await asyncio.to_thread(self.store.save_job, copy.deepcopy(record))

    async def load(self, job_id: str, key_id: str | None = None) -> dict | None:
        """The record, or None if there is none or it belongs to another key."""
        record = await asyncio.to_thread(self.store.load_job, job_id)
        if record is None or (key_id is not None and record.get("key_id") != key_id):
            return None
        return record

    async def load_progress(self, job_id: str) -> dict | None:
        return await asyncio.to_thread(self.store.load_progress, job_id)

    async def load_image(self, job_id: str, name: str) -> bytes | None:
        return await asyncio.to_thread(self.store.load_image, job_id, name)

    # -- submit -------------------------------------------------------------------------

    def resolve_params(self, model: str, request: GenerateRequest) -> dict:
        """The request with every default filled in, so the record says exactly what ran.

        Raises AdapterError for a LoRA that cannot be used, before anything is stored.
        """
        defaults = self.defaults[model]
        prompt, loras, warnings = request.prompt, [], []
        if request.loras:
            if len(request.loras) > self.args.loras.max_per_request:
                raise AdapterError(f"at most {self.args.loras.max_per_request} LoRAs per request.")
            records = self.adapters.resolve(model, [(choice.id, choice.scale) for choice in request.loras])
            if request.add_trigger_words:
                prompt = add_trigger_words(prompt, records)
            warnings = trigger_warnings(prompt, records)
            loras = [
                {"id": record["id"], "source": record["source"], "scale": choice.scale}
                for record, choice in zip(records, request.loras)
            ]
        width, height = request.size(defaults.width, defaults.height)
        guidance = request.guidance if request.guidance is not None else defaults.guidance
        return {
            "prompt": prompt,
            "loras": loras,
            "warnings": warnings,
            "width": width,
            "height": height,
            "steps": request.steps if request.steps is not None else defaults.steps,
            "guidance": None if defaults.distilled else guidance,
            "num_images": request.num_images,
            "output_format": request.output_format,
            "seed": request.seed if request.seed is not None else random.randint(0, MAX_SEED),
        }

    async def submit(
        self, model: str, request: GenerateRequest, key_id: str, base_url: str, idempotency_key: str | None = None
    ) -> dict:
        if idempotency_key:
            existing_id = await asyncio.to_thread(self.store.find_idempotent, key_id, idempotency_key)
            existing = existing_id and await self.load(existing_id, key_id)
            if existing:
                return existing
        now = time.time()
        record = {
            "id": new_job_id(),
            "model": model,
            "key_id": key_id,
            "base_url": base_url,
            "status": JobStatus.PENDING.value,
            "stage": "queued",
            "request": await asyncio.to_thread(self.resolve_params, model, request),
            "attempts": 0,
            "owner": self.replica_id,
            "heartbeat_at": now,
            "created_at": now,
            "updated_at": now,
            "images": [],
            "timings_s": {},
            "batch": {},
            "error": None,
            "webhook": {"url": request.webhook_url, "secret": request.webhook_secret, "deliveries": []}
            if request.webhook_url
            else None,
        }
        record["seed"] = record["request"]["seed"]
        record["warnings"] = record["request"].pop("warnings")
        refusal = self.policy.refusal(request.prompt)
        if refusal is None and self.limiter is not None:
            over = await self.limiter.admit.remote(key_id, record["id"])
            if over:
                raise LimitExceeded(over["reason"], over["retry_after_s"])
        await asyncio.to_thread(self.store.add_history, key_id, record["id"], now)
        if idempotency_key:
            await asyncio.to_thread(self.store.remember_idempotent, key_id, idempotency_key, record["id"])
        if refusal is not None:
            record.update(status=JobStatus.REQUEST_MODERATED.value, stage="done", error=refusal)
            await self._save(record)
            self._after_finish(record)
            return record
        await self._save(record)
        await asyncio.to_thread(self.store.mark_pending, record["id"])
        self._start(record)
        return record

    async def wait(self, job_id: str, key_id: str) -> dict:
        """Wait for a job this replica runs (the synchronous OpenAI route) and return its record."""
        task = self.tasks.get(job_id)
        if task is not None:
            await asyncio.shield(task)
        return await self.load(job_id, key_id)

    # -- run ----------------------------------------------------------------------------

    def _start(self, record: dict) -> None:
        job_id = record["id"]
        task = asyncio.create_task(self._run(record))
        self.tasks[job_id] = task
        self._count_in_flight(record["model"], +1)

        def done(_task) -> None:
            self.tasks.pop(job_id, None)
            self._count_in_flight(record["model"], -1)

        task.add_done_callback(done)

    def _count_in_flight(self, model: str, change: int) -> None:
        self.in_flight[model] = self.in_flight.get(model, 0) + change
        metrics.QUEUE_DEPTH.set(self.in_flight[model], tags={"model": model})

    async def _run(self, record: dict) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(record))
        try:
            while True:
                record["attempts"] += 1
                try:
                    await asyncio.wait_for(self._attempt(record), timeout=self.args.jobs.timeout_s)
                    return
                except JobCancelled:
                    return await self._end(record, JobStatus.CANCELLED, "cancelled by the user")
                except InvalidRequestError as error:
                    return await self._end(record, JobStatus.ERROR, f"invalid request: {error}")
                except asyncio.TimeoutError:
                    return await self._end(record, JobStatus.ERROR, f"timed out after {self.args.jobs.timeout_s:.0f} s")
                except Exception as error:  # a dead replica, lost actor, or a crash in a worker
                    cause = getattr(error, "cause", None) or error  # a RayTaskError carries the worker's own error
                    reason = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
                    if record["attempts"] >= self.args.jobs.max_attempts:
                        return await self._end(
                            record, JobStatus.ERROR, f"worker failed after {record['attempts']} attempt(s): {reason}"
                        )
                    logger.warning("job %s attempt %d failed (%s); retrying", record["id"], record["attempts"], reason)
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, record: dict) -> None:
        while True:
            await asyncio.sleep(self.args.jobs.heartbeat_s)
            record["heartbeat_at"] = time.time()
            await self._save(record)

    async def _check_cancel(self, job_id: str) -> None:
        if await asyncio.to_thread(self.store.is_cancel_requested, job_id):
            raise JobCancelled()

    async def _attempt(self, record: dict) -> None:
        params = record["request"]
        model = record["model"]
        await self._check_cancel(record["id"])
        record["stage"] = "encoding"
        await self._save(record)
        encode_started = time.perf_counter()
        prompt = await self.encoders[model].encode.remote(params["prompt"])
        negative = None
        if params["guidance"] is not None and params["guidance"] > 1.0:
            negative = await self.encoders[model].encode.remote("")
        encode_s = time.perf_counter() - encode_started

        await self._check_cancel(record["id"])
        record["stage"] = "denoising"
        await self._save(record)
        request = GenerationRequest(
            prompt=prompt,
            negative_prompt=negative,
            width=params["width"],
            height=params["height"],
            steps=params["steps"],
            guidance=params["guidance"],
            seed=params["seed"],
            num_images=params["num_images"],
            output_format=params["output_format"],
            adapters=tuple(AdapterRef(a["id"], a["source"], a["scale"]) for a in params.get("loras", [])),
            request_id=record["id"],
        )
        denoiser = self.denoisers[model]
        if request.adapters:
            denoiser = denoiser.options(multiplexed_model_id=adapter_set_key(request))
        job = DenoiseJob(record["id"], request)
        outcome = await denoiser.generate.remote(job)
        if outcome.cancelled:
            raise JobCancelled()
        cold_start_s = max(0.0, outcome.replica_ready_at - job.submitted_at)
        cost_usd = outcome.gpu_seconds * self.args.pricing.usd_per_gpu_second
        if cost_usd:
            metrics.COST_USD.inc(cost_usd, tags={"model": model})
        record.update(
            images=outcome.images,
            seed=outcome.seed,
            batch={**outcome.batch, "node": outcome.node_id[:12]},
            timings_s={
                "encode": encode_s,
                **outcome.timings_s,
                "cold_start": cold_start_s,
                "total": time.time() - record["created_at"],
            },
            usage={"gpu_seconds": outcome.gpu_seconds, "cost_usd": cost_usd, "gpu_type": self.args.pricing.gpu_type},
        )
        await self._end(record, JobStatus.READY)

    async def _end(self, record: dict, status: JobStatus, reason: str | None = None) -> None:
        if reason:
            logger.warning("job %s ended %s: %s", record["id"], status.value, reason)
        record.update(status=status.value, stage="done", error=reason)
        await self._save(record)
        await asyncio.to_thread(self.store.clear_pending, record["id"])
        self._after_finish(record)

    def _after_finish(self, record: dict) -> None:
        if self.limiter is not None:
            self.limiter.release.remote(record["key_id"], record["id"])
        if record.get("webhook"):
            asyncio.create_task(self._send_webhook(record))

    async def _send_webhook(self, record: dict) -> None:
        webhook = record["webhook"]

        async def remember(attempt: dict) -> None:
            webhook["deliveries"].append(attempt)
            await self._save(record)

        await deliver(
            webhook["url"],
            self.views.webhook_payload(record),
            webhook["secret"],
            webhook_id=record["id"],
            max_attempts=self.args.webhooks.max_attempts,
            initial_backoff_s=self.args.webhooks.initial_backoff_s,
            timeout_s=self.args.webhooks.timeout_s,
            on_attempt=remember,
        )

    # -- cancel, queue, history ---------------------------------------------------------

    async def history(self, key_id: str, limit: int, cursor: str | None) -> tuple[list[str], str | None]:
        return await asyncio.to_thread(self.store.list_history, key_id, limit, cursor)

    async def usage(self, key_id: str) -> dict:
        """GPU-seconds and cost of a key's finished jobs, per model and in all."""
        job_ids, _ = await asyncio.to_thread(self.store.list_history, key_id, 10**9, None)
        per_model: dict[str, dict] = {}
        for job_id in job_ids:
            record = await self.load(job_id, key_id)
            if record is None or not record.get("usage"):
                continue
            totals = per_model.setdefault(record["model"], {"jobs": 0, "images": 0, "gpu_seconds": 0.0, "cost_usd": 0.0})
            totals["jobs"] += 1
            totals["images"] += len(record["images"])
            totals["gpu_seconds"] += record["usage"]["gpu_seconds"]
            totals["cost_usd"] += record["usage"]["cost_usd"]
        overall = {key: sum(t[key] for t in per_model.values()) for key in ("jobs", "images", "gpu_seconds", "cost_usd")}
        return {"gpu_type": self.args.pricing.gpu_type, "usd_per_gpu_hour": self.args.pricing.usd_per_gpu_hour[self.args.pricing.gpu_type],
                "models": per_model, "total": overall}

    async def cancel(self, record: dict) -> dict:
        """Ask a job to stop: a queued one never runs, a running one stops at its next step."""
        if record["status"] in FINAL_STATUSES:
            return record
        await asyncio.to_thread(self.store.request_cancel, record["id"])
        if record["id"] not in self.tasks and record["stage"] == "queued":
            await self._end(record, JobStatus.CANCELLED, "cancelled by the user")
        return record

    async def queue_position(self, record: dict) -> int | None:
        """How many jobs of the same model were submitted earlier and have not started denoising."""
        if record["status"] != JobStatus.PENDING.value or record["stage"] == "denoising":
            return None
        ahead = 0
        for job_id in await asyncio.to_thread(self.store.pending_job_ids):
            other = await self.load(job_id)
            if (
                other
                and other["id"] != record["id"]
                and other["model"] == record["model"]
                and other["status"] == JobStatus.PENDING.value
                and other["stage"] != "denoising"
                and other["created_at"] < record["created_at"]
            ):
                ahead += 1
        return ahead

    # -- orphans ------------------------------------------------------------------------

    def is_stale(self, record: dict) -> bool:
        return (
            record["status"] == JobStatus.PENDING.value
            and record["id"] not in self.tasks
            and time.time() - record["heartbeat_at"] > self.args.jobs.stale_after_s
        )

    async def adopt_if_stale(self, record: dict) -> dict:
        """Take over a job whose owner stopped beating: retry it, or end it if out of attempts."""
        if not self.is_stale(record):
            return record
        if record["attempts"] >= self.args.jobs.max_attempts:
            await self._end(record, JobStatus.ERROR, f"the replica running it stopped after {record['attempts']} attempt(s)")
            return record
        logger.warning("adopting stale job %s from replica %s", record["id"], record["owner"])
        record.update(owner=self.replica_id, heartbeat_at=time.time(), stage="queued")
        await self._save(record)
        self._start(record)
        return record

    async def sweep(self) -> None:
        for job_id in await asyncio.to_thread(self.store.pending_job_ids):
            record = await self.load(job_id)
            if record is None or record["status"] != JobStatus.PENDING.value:
                await asyncio.to_thread(self.store.clear_pending, job_id)
            else:
                await self.adopt_if_stale(record)

    def start_sweeper(self) -> None:
        """Sweep for orphaned jobs now and then every half stale window (idempotent)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                logger.exception("sweep for orphaned jobs failed")
            await asyncio.sleep(self.args.jobs.stale_after_s / 2)
