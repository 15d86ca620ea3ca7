"""What the job core knows of a job kind, and what a running job may ask of the core.

A kind is a name, a record type (a `JobState` with its typed `params` and its result fields) and
`run`, one attempt of the work. The core gives every kind the same guarantees: a lease with a
fencing token, a heartbeat, adoption when its replica dies, retries, a timeout, cancel, one final
write, the limiter's slot given back and the webhook sent.

Cancel requests and progress travel through `JobSignals`: the live channel, with each cancel also
kept in the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from deployments.progress import Progress
from serve_apps.jobs.records import JobState, JobStatus
from serve_apps.live import LiveChannel
from serve_apps.store import Claim, JobsRepository

CANCELLED_BY_USER = "cancelled by the user"


class JobEnds(Exception):
    """Raised by a kind's `run` to end the job now with this status and reason, without a retry."""

    def __init__(self, status: JobStatus, reason: str | None):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class JobCancelled(JobEnds):
    """A cancel was asked for: the job ends Cancelled at the step that noticed it."""

    def __init__(self, reason: str = CANCELLED_BY_USER):
        super().__init__(JobStatus.CANCELLED, reason)


class JobSignals:
    """Between a job's asker and its runner: cancel requests one way, progress the other.

    Both travel on the live channel (`serve_apps.live`), which the workers' step loops read and write
    too. A cancel is also written to the database first, so it outlives the channel: the running job's
    heartbeat finds it there and publishes it again (`cancel_found`). Progress is transient."""

    def __init__(self, channel: LiveChannel, jobs: JobsRepository):
        self.channel = channel
        self.jobs = jobs

    async def request_cancel(self, job_id: str) -> None:
        await asyncio.to_thread(self.jobs.request_cancel, job_id)
        await self.channel.request_cancel(job_id)

    async def cancel_found(self, job_id: str) -> None:
        """The heartbeat saw a cancel in the database: publish it again (a restarted channel lost it)."""
        await self.channel.request_cancel(job_id)

    async def cancel_requested(self, job_id: str) -> bool:
        return await self.channel.cancel_requested(job_id)

    async def report_progress(self, progress: Progress) -> None:
        await self.channel.publish(progress)

    async def progress(self, job_id: str) -> Progress | None:
        return await self.channel.progress(job_id)

    async def ended(self, job_id: str) -> None:
        """After the final write: readers waiting on the job wake, workers still on it stop."""
        await self.channel.finish(job_id)


@dataclass(frozen=True)
class JobContext:
    """What one running job may ask of the core: save its record under its lease, report progress,
    and learn whether it should stop."""

    job_id: str
    signals: JobSignals
    save_record: Callable[[JobState], Awaitable[None]]

    async def save(self, record: JobState) -> None:
        """Write the record (a new stage, say); LeaseLost once another replica owns the job."""
        await self.save_record(record)

    async def report_progress(
        self, step: int, of: int, eta_s: float | None = None, preview: bytes | None = None
    ) -> None:
        await self.signals.report_progress(Progress(self.job_id, step, of, eta_s, preview, time.time()))

    async def cancel_requested(self) -> bool:
        return await self.signals.cancel_requested(self.job_id)

    async def check_cancel(self) -> None:
        """Raise JobCancelled if a cancel was asked for: call it between steps."""
        if await self.cancel_requested():
            raise JobCancelled()


class JobKind(Protocol):
    """A job kind as the core sees it. `run` does one attempt: it fills the record's result fields,
    raises JobEnds to end the job without a retry, and any other error is retried up to
    jobs.max_attempts. It must call `context.check_cancel()` between its steps."""

    name: str
    record_type: type[JobState]

    async def run(self, record: JobState, claim: Claim, context: JobContext) -> None: ...
