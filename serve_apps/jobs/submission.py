"""Submission: idempotency, moderation, per-key limits, and the request turned into params once."""

from __future__ import annotations

import asyncio
import time

from deployments.contracts import AdapterRef, GenerationDefaults, GenerationParams
from lora.registry import AdapterError, AdapterRegistry, add_trigger_words, trigger_warnings
from serve_apps.config import AppArgs
from serve_apps.moderation import PromptPolicy
from serve_apps.network import check_public_url_async
from serve_apps.protocol import GenerateRequest
from serve_apps.records import JobRecord, JobStatus, Stage, Webhook
from serve_apps.references import InputResolver, ResolvedInputs
from serve_apps.storage import JobStore, new_job_id


class LimitExceeded(Exception):
    def __init__(self, reason: str, retry_after_s: int):
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class JobSubmitter:
    def __init__(
        self,
        store: JobStore,
        defaults: dict[str, GenerationDefaults],
        args: AppArgs,
        limiter=None,
        adapters: AdapterRegistry | None = None,
    ):
        """`defaults` maps a model to its GenerationDefaults; `limiter` is the KeyLimiter handle (None: no limits)."""
        self.store = store
        self.defaults = defaults
        self.args = args
        self.limiter = limiter
        self.adapters = adapters
        self.policy = PromptPolicy(args.moderation.blocked_patterns)
        self.inputs = InputResolver.from_args(args)

    def params(
        self, model: str, request: GenerateRequest, inputs: ResolvedInputs = ResolvedInputs()
    ) -> tuple[GenerationParams, list[str]]:
        """The request's params and its warnings. Raises AdapterError for a LoRA that cannot be used."""
        prompt, adapters, warnings = request.prompt, (), []
        if request.loras:
            if len(request.loras) > self.args.loras.max_per_request:
                raise AdapterError(f"at most {self.args.loras.max_per_request} LoRAs per request.")
            records = self.adapters.resolve(model, [(choice.id, choice.scale) for choice in request.loras])
            if request.add_trigger_words:
                prompt = add_trigger_words(prompt, records)
            warnings = trigger_warnings(prompt, records)
            adapters = tuple(
                AdapterRef(record["id"], record["source"], choice.scale) for record, choice in zip(records, request.loras)
            )
        return request.to_params(self.defaults[model], adapters, prompt, inputs.references, inputs.mask), warnings

    async def existing(self, key_id: str, idempotency_key: str | None) -> JobRecord | None:
        if not idempotency_key:
            return None
        job_id = await asyncio.to_thread(self.store.find_idempotent, key_id, idempotency_key)
        record = job_id and await asyncio.to_thread(self.store.load_job, job_id)
        return record if record and record.key_id == key_id else None

    async def create(
        self, model: str, request: GenerateRequest, key_id: str, base_url: str, owner: str, idempotency_key: str | None
    ) -> JobRecord:
        """A new record, counted against the key's limits and remembered in its history (not yet saved).

        A prompt the policy refuses comes back already final (Request Moderated). Raises BlockedUrl
        for a webhook_url that resolves to a private address."""
        if request.webhook_url:
            await check_public_url_async(request.webhook_url, self.args.network.allowed_private_hosts, "webhook_url")
        inputs = await self.inputs.resolve(request, key_id)  # raises InputRejected naming the field
        params, warnings = await asyncio.to_thread(self.params, model, request, inputs)
        record = JobRecord(
            id=new_job_id(),
            model=model,
            key_id=key_id,
            base_url=base_url,
            params=params,
            owner=owner,
            warnings=warnings,
            webhook=Webhook(url=request.webhook_url, secret=request.webhook_secret) if request.webhook_url else None,
        )
        refusal = self.policy.refusal(request.prompt) or inputs.refusal
        if refusal is None and self.limiter is not None:
            over = await self.limiter.admit.remote(key_id, record.id)
            if over:
                raise LimitExceeded(over["reason"], over["retry_after_s"])
        await asyncio.to_thread(self.store.add_history, key_id, record.id, record.created_at)
        if idempotency_key:
            await asyncio.to_thread(self.store.remember_idempotent, key_id, idempotency_key, record.id)
        if refusal is not None:
            record.status, record.stage, record.error = JobStatus.REQUEST_MODERATED, Stage.DONE, refusal
        record.updated_at = time.time()
        return record
