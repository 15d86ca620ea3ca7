"""Submission: idempotency, moderation, per-key limits, and the request turned into params once."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from deployments.contracts import AdapterRef, GenerationDefaults, GenerationParams
from lora.registry import AdapterError, AdapterRegistry, add_trigger_words, trigger_warnings
from serve_apps.api.protocol import GenerateRequest
from serve_apps.config import AppArgs
from serve_apps.jobs.estimates import EtaEstimator
from serve_apps.jobs.records import JobRecord, JobStatus, Stage, Webhook
from serve_apps.jobs.references import InputResolver, ResolvedInputs
from serve_apps.jobs.reruns import check_rerunnable, rerun_record
from serve_apps.security.moderation import PromptPolicy
from serve_apps.security.network import check_public_url_async
from serve_apps.store import Claim, JobsRepository, request_digest
from serve_apps.store.storage import JobStore, new_job_id


class LimitExceeded(Exception):
    """Over a per-key limit (429) or the service-wide cap of unfinished jobs (503)."""

    def __init__(self, reason: str, retry_after_s: int, status_code: int = HTTPStatus.TOO_MANY_REQUESTS):
        super().__init__(reason)
        self.retry_after_s = retry_after_s
        self.status_code = status_code


class JobSubmitter:
    def __init__(
        self,
        jobs: JobsRepository,
        defaults: dict[str, GenerationDefaults],
        args: AppArgs,
        limiter=None,
        adapters: AdapterRegistry | None = None,
        eta: EtaEstimator | None = None,
    ):
        """`defaults` maps a model to its GenerationDefaults; `limiter` is the KeyLimiter handle (None: no limits);
        `eta` estimates each job's ETA and refuses one over its deadline_s (None: no ETA)."""
        self.jobs = jobs
        self.defaults = defaults
        self.args = args
        self.limiter = limiter
        self.adapters = adapters
        self.eta = eta
        self.policy = PromptPolicy(args.moderation.blocked_patterns)
        self.inputs = InputResolver.from_args(args)

    def params(
        self, model: str, request: GenerateRequest, inputs: ResolvedInputs = ResolvedInputs(), key_id: str | None = None
    ) -> tuple[GenerationParams, list[str]]:
        """The request's params and its warnings. Raises AdapterError for a LoRA that cannot be used (or that is
        another key's private one)."""
        prompt, adapters, warnings = request.prompt, (), []
        if request.loras:
            if len(request.loras) > self.args.loras.max_per_request:
                raise AdapterError(f"at most {self.args.loras.max_per_request} LoRAs per request.")
            records = self.adapters.resolve(model, [(choice.id, choice.scale) for choice in request.loras], key_id)
            if request.add_trigger_words:
                prompt = add_trigger_words(prompt, records)
            warnings = trigger_warnings(prompt, records)
            adapters = tuple(
                AdapterRef(record["id"], record["source"], choice.scale)
                for record, choice in zip(records, request.loras)
            )
        return request.to_params(self.defaults[model], adapters, prompt, inputs.references, inputs.mask), warnings

    async def submit(
        self, model: str, request: GenerateRequest, key_id: str, base_url: str, owner: str, idempotency_key: str | None
    ) -> tuple[JobRecord, Claim | None]:
        """Store a new job and take its lease, counted against the key's limits; or, for an
        Idempotency-Key this key used before, the first job and no claim.

        A prompt the policy refuses (as it will be encoded: trigger words included) is stored
        already final, Request Moderated, and still counts against the submit rate. Raises
        BlockedUrl for a webhook_url that resolves to a private address, LimitExceeded over a limit,
        IdempotencyConflict for a reused key with another body.

        Order: a replay is looked up first (it gets its job even while the key is at its limits), then the
        job is admitted, and only then are its input images fetched, decoded and stored."""
        body_digest = request_digest(f"{model}\n{request.model_dump_json()}")
        if idempotency_key:
            first = await asyncio.to_thread(self.jobs.idempotent_replay, key_id, idempotency_key, body_digest)
            if first is not None:
                return first, None
        job_id = new_job_id()
        await self.admit(key_id, job_id)  # before any fetch, decode or store: a refused submit costs nothing
        try:
            if request.webhook_url:
                await check_public_url_async(
                    request.webhook_url, self.args.network.allowed_private_hosts, "webhook_url"
                )
            inputs = await self.inputs.resolve(request, key_id)  # raises InputRejected naming the field
            params, warnings = await asyncio.to_thread(self.params, model, request, inputs, key_id)
            record = JobRecord(
                id=job_id,
                model=model,
                key_id=key_id,
                base_url=base_url,
                params=params,
                owner=owner,
                warnings=warnings,
                webhook=Webhook(url=request.webhook_url, secret=request.webhook_secret)
                if request.webhook_url
                else None,
                deadline_s=request.deadline_s,
            )
            refusal = self.policy.refusal(params.prompt) or inputs.refusal
            if refusal is not None:
                record.status, record.stage, record.error = JobStatus.REQUEST_MODERATED, Stage.DONE, refusal
            elif self.eta is not None:  # DeadlineUnmet here: refused before any row or GPU work
                record.submit_eta_s = await self.eta.at_submit(model, params, request.deadline_s)
            stored, claim = await asyncio.to_thread(self.jobs.create, record, idempotency_key, body_digest)
        except BaseException:
            self.release(key_id, job_id)
            raise
        if stored.id != job_id:
            self.release(key_id, job_id)  # a replay holds no slot of its own
        return stored, claim

    async def rerun(
        self, original: JobRecord, base_url: str, owner: str, store: JobStore
    ) -> tuple[JobRecord, Claim | None]:
        """A new job from `original`'s params, admitted like a submit (the prompt policy asked again: it may have
        changed since). Raises RerunRefused for a job that cannot be rerun, LimitExceeded over a limit."""
        await asyncio.to_thread(check_rerunnable, original, self.adapters, store)
        job_id = new_job_id()
        await self.admit(original.key_id, job_id)
        try:
            record = rerun_record(original, job_id, owner, base_url)
            refusal = self.policy.refusal(record.params.prompt)
            if refusal is not None:
                record.status, record.stage, record.error = JobStatus.REQUEST_MODERATED, Stage.DONE, refusal
            return await asyncio.to_thread(self.jobs.create, record)
        except BaseException:
            self.release(original.key_id, job_id)
            raise

    async def admit(self, key_id: str, job_id: str) -> None:
        """Take a slot of the key's limits and the global cap for this job; LimitExceeded when there is none."""
        if self.limiter is not None:
            over = await self.limiter.admit.remote(key_id, job_id)
            if over:
                raise LimitExceeded(over["reason"], over["retry_after_s"], over["status_code"])

    def release(self, key_id: str, job_id: str) -> None:
        if self.limiter is not None:
            self.limiter.release.remote(key_id, job_id)
