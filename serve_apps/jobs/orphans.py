"""Orphans: jobs whose owning replica stopped beating are adopted (retried) or ended, never left Pending."""

from __future__ import annotations

import asyncio
import logging
import time

from serve_apps.config import AppArgs
from serve_apps.jobs.running import JobRunner
from serve_apps.records import JobRecord, JobStatus, Stage
from serve_apps.storage import JobStore

logger = logging.getLogger("flux_serve.jobs")


class OrphanSweeper:
    def __init__(self, store: JobStore, runner: JobRunner, args: AppArgs, replica_id: str):
        self.store = store
        self.runner = runner
        self.args = args
        self.replica_id = replica_id
        self._sweeper: asyncio.Task | None = None

    def is_stale(self, record: JobRecord) -> bool:
        return (
            record.status == JobStatus.PENDING
            and record.id not in self.runner.tasks
            and time.time() - record.heartbeat_at > self.args.jobs.stale_after_s
        )

    async def adopt_if_stale(self, record: JobRecord) -> JobRecord:
        """Take over a job whose owner stopped beating: retry it, or end it if out of attempts."""
        if not self.is_stale(record):
            return record
        if record.attempts >= self.args.jobs.max_attempts:
            await self.runner.end(
                record, JobStatus.ERROR, f"the replica running it stopped after {record.attempts} attempt(s)"
            )
            return record
        logger.warning("adopting stale job %s from replica %s", record.id, record.owner)
        record.owner, record.heartbeat_at, record.stage = self.replica_id, time.time(), Stage.QUEUED
        await self.runner.save(record)
        self.runner.start(record)
        return record

    async def sweep(self) -> None:
        for job_id in await asyncio.to_thread(self.store.pending_job_ids):
            record = await asyncio.to_thread(self.store.load_job, job_id)
            if record is None or record.status != JobStatus.PENDING:
                await asyncio.to_thread(self.store.clear_pending, job_id)
            else:
                await self.adopt_if_stale(record)

    def start(self) -> None:
        """Sweep now and then every half stale window (idempotent)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                logger.exception("sweep for orphaned jobs failed")
            await asyncio.sleep(self.args.jobs.stale_after_s / 2)
