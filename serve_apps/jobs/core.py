"""The job core: what every job kind shares on one replica, over the jobs repository.

Start a stored job, cancel one, adopt the stale ones and sweep for them; the kind's runner does the
work (`kind.JobKind`), `running.JobRunner` runs it under its lease, `orphans.OrphanSweeper` takes
over the jobs whose replica died. Nothing here knows what a kind makes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable

from serve_apps.config import AppArgs
from serve_apps.jobs.kind import CANCELLED_BY_USER, JobKind, JobSignals
from serve_apps.jobs.orphans import OrphanSweeper
from serve_apps.jobs.records import JobState, Stage
from serve_apps.jobs.running import JobRunner
from serve_apps.live import LiveChannel, local_channel
from serve_apps.store import Claim, JobsRepository
from serve_apps.store.storage import JobStore


class JobCore:
    def __init__(
        self,
        jobs: JobsRepository,
        store: JobStore,
        kinds: Iterable[JobKind],
        args: AppArgs,
        webhook_payload: Callable[[JobState], dict],
        limiter=None,
        channel: LiveChannel | None = None,
        replica_id: str | None = None,
    ):
        """`store` holds the files retention deletes; `channel` carries cancel and progress (default: this
        process's own; a cluster passes its `RayChannel`); `limiter` is the KeyLimiter handle whose slot a
        finished job frees."""
        self.jobs = jobs
        self.store = store
        self.signals = JobSignals(channel or local_channel(), jobs)
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self.runner = JobRunner(jobs, self.signals, {kind.name: kind for kind in kinds}, args, webhook_payload, limiter)
        self.orphans = OrphanSweeper(jobs, store, self.runner, args, self.replica_id)

    def start(self, record: JobState, claim: Claim) -> None:
        """Run a job just stored with its lease; one stored already final only finishes (webhook, slot)."""
        if record.is_final:
            self.runner.after_finish(record)
        else:
            self.runner.start(record, claim)

    async def wait(self, job_id: str) -> None:
        await self.runner.wait(job_id)

    async def hand_over(self) -> int:
        """This replica is stopping: its jobs' leases are given up for adoption."""
        return await self.runner.hand_over()

    async def cancel(self, record: JobState) -> JobState:
        """Ask a job to stop: a queued one ends at once, whoever owns it; a running one at its next step (the
        request is kept in the database and sent on the live channel to the worker)."""
        if record.is_final:
            return record
        await self.signals.request_cancel(record.id)
        if record.stage == Stage.QUEUED:
            ended = await asyncio.to_thread(self.jobs.cancel_if_queued, record.id, CANCELLED_BY_USER)
            if ended is not None:
                self.runner.after_finish(ended)
                return ended
        return await asyncio.to_thread(self.jobs.load, record.id) or record

    async def adopt_if_stale(self, record: JobState) -> JobState:
        return await self.orphans.adopt_if_stale(record)

    async def sweep(self) -> None:
        """Adopt (or end) every stale job once, now."""
        await self.orphans.sweep()

    def start_sweeper(self) -> None:
        self.orphans.start()
