"""JobService: the one object the routes talk to, over submission, running, orphans and usage."""

from __future__ import annotations

import asyncio
import uuid

from deployments.contracts import GenerationDefaults
from lora.registry import AdapterRegistry
from serve_apps.config import AppArgs
from serve_apps.jobs.orphans import OrphanSweeper
from serve_apps.jobs.running import JobRunner
from serve_apps.jobs.submission import JobSubmitter
from serve_apps.jobs.usage import jobs_ahead, usage_summary
from serve_apps.protocol import GenerateRequest
from serve_apps.records import JobRecord, JobStatus, Stage
from serve_apps.storage import JobStore
from serve_apps.views import JobViews


class JobService:
    def __init__(
        self,
        store: JobStore,
        encoders: dict,
        denoisers: dict,
        args: AppArgs,
        defaults: dict[str, GenerationDefaults],
        views: JobViews,
        limiter=None,
        adapters: AdapterRegistry | None = None,
    ):
        self.store = store
        self.denoisers = denoisers
        self.args = args
        self.replica_id = uuid.uuid4().hex[:12]
        self.runner = JobRunner(store, encoders, denoisers, args, views, limiter)
        self.submitter = JobSubmitter(store, defaults, args, limiter, adapters)
        self.orphans = OrphanSweeper(store, self.runner, args, self.replica_id)

    # -- reads, off the event loop --------------------------------------------------------

    async def load(self, job_id: str, key_id: str | None = None) -> JobRecord | None:
        """The record, or None if there is none or it belongs to another key."""
        record = await asyncio.to_thread(self.store.load_job, job_id)
        if record is None or (key_id is not None and record.key_id != key_id):
            return None
        return record

    async def load_progress(self, job_id: str) -> dict | None:
        return await asyncio.to_thread(self.store.load_progress, job_id)

    async def load_image(self, job_id: str, name: str) -> bytes | None:
        return await asyncio.to_thread(self.store.load_image, job_id, name)

    # -- submit, wait, cancel ---------------------------------------------------------------

    async def submit(
        self, model: str, request: GenerateRequest, key_id: str, base_url: str, idempotency_key: str | None = None
    ) -> JobRecord:
        existing = await self.submitter.existing(key_id, idempotency_key)
        if existing:
            return existing
        record = await self.submitter.create(model, request, key_id, base_url, self.replica_id, idempotency_key)
        await self.runner.save(record)
        if record.is_final:
            self.runner.after_finish(record)
            return record
        await asyncio.to_thread(self.store.mark_pending, record.id)
        self.runner.start(record)
        return record

    async def wait(self, job_id: str, key_id: str) -> JobRecord:
        """Wait for a job this replica runs (the synchronous OpenAI route) and return its record."""
        await self.runner.wait(job_id)
        return await self.load(job_id, key_id)

    async def cancel(self, record: JobRecord) -> JobRecord:
        """Ask a job to stop: a queued one never runs, a running one stops at its next step."""
        if record.is_final:
            return record
        await asyncio.to_thread(self.store.request_cancel, record.id)
        if record.id not in self.runner.tasks and record.stage == Stage.QUEUED:
            await self.runner.end(record, JobStatus.CANCELLED, "cancelled by the user")
        return record

    # -- orphans ----------------------------------------------------------------------------

    async def adopt_if_stale(self, record: JobRecord) -> JobRecord:
        return await self.orphans.adopt_if_stale(record)

    def start_sweeper(self) -> None:
        self.orphans.start()

    # -- history, usage, queue --------------------------------------------------------------

    async def history(self, key_id: str, limit: int, cursor: str | None) -> tuple[list[str], str | None]:
        return await asyncio.to_thread(self.store.list_history, key_id, limit, cursor)

    async def usage(self, key_id: str) -> dict:
        job_ids, _ = await self.history(key_id, 10**9, None)
        records = [record for record in [await self.load(job_id, key_id) for job_id in job_ids] if record]
        return usage_summary(records, self.args.pricing)

    async def queue_position(self, record: JobRecord) -> int | None:
        if not record.is_waiting:
            return None
        pending = [await self.load(job_id) for job_id in await asyncio.to_thread(self.store.pending_job_ids)]
        return jobs_ahead(record, [other for other in pending if other is not None])
