"""Orphans: jobs whose owning replica stopped beating are adopted (retried) or ended, never left Pending;
webhook deliveries that are due, wherever they began, are sent on.

Adoption takes the lease in one conditional update, so of two replicas that see a job stale
at once, one runs it and the other leaves it alone. Staleness is judged in SQL by the database's
clock, the one heartbeats are stamped with: a replica whose own clock runs ahead adopts no live job.
"""

from __future__ import annotations

import asyncio
import logging
import time

from serve_apps.config import AppArgs
from serve_apps.jobs.records import JobState, JobStatus
from serve_apps.jobs.retention import apply_retention
from serve_apps.jobs.running import JobRunner
from serve_apps.store import JobsRepository
from serve_apps.store.storage import JobStore

logger = logging.getLogger("flux_serve.jobs")


RETENTION_EVERY_S = 3600.0


class OrphanSweeper:
    """Also applies retention, at most every RETENTION_EVERY_S, from the same loop."""

    def __init__(self, jobs: JobsRepository, store: JobStore, runner: JobRunner, args: AppArgs, replica_id: str):
        self.jobs = jobs
        self.store = store
        self.runner = runner
        self.args = args
        self.replica_id = replica_id
        self._sweeper: asyncio.Task | None = None
        self._retention_at = 0.0

    async def adopt_if_stale(self, record: JobState) -> JobState:
        """Take over a job whose owner stopped beating: retry it, or end it if out of attempts."""
        if record.status != JobStatus.PENDING or record.id in self.runner.tasks:
            return record
        stale = await asyncio.to_thread(self.jobs.stale_jobs, self.args.jobs.stale_after_s, record.id)
        if not stale:
            return record
        return await self._adopt(*stale[0]) or record

    async def _adopt(self, job_id: str, token: int) -> JobState | None:
        claim = await asyncio.to_thread(self.jobs.adopt, job_id, token, self.replica_id, self.args.jobs.stale_after_s)
        if claim is None:
            return None  # another replica won it, or its owner beat again
        record = await asyncio.to_thread(self.jobs.load, job_id)
        if record.attempts >= self.args.jobs.max_attempts:
            reason = f"the replica running it stopped after {record.attempts} attempt(s)"
            await self.runner.end(claim, record, JobStatus.ERROR, reason)
            return record
        logger.warning("adopted stale job %s", job_id)
        self.runner.start(record, claim)
        return record

    async def sweep(self) -> None:
        await asyncio.to_thread(self.jobs.quarantine_unreadable)
        for job_id, token in await asyncio.to_thread(self.jobs.stale_jobs, self.args.jobs.stale_after_s):
            if job_id in self.runner.tasks:
                continue
            try:
                await self._adopt(job_id, token)
            except Exception:
                logger.exception("adopting job %s failed; the next sweep tries again", job_id)
        try:
            await self.runner.webhooks.start_due()
        except Exception:
            logger.exception("looking for due webhooks failed; the next sweep looks again")

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
            if time.monotonic() - self._retention_at >= RETENTION_EVERY_S:
                self._retention_at = time.monotonic()
                try:
                    await asyncio.to_thread(apply_retention, self.jobs, self.store, self.args.jobs.retention_days)
                except Exception:
                    logger.exception("retention failed; it runs again in an hour")
            await asyncio.sleep(self.args.jobs.stale_after_s / 2)
