"""Running a job on this replica, whatever its kind: attempts, timeout, heartbeat, the final write,
the limiter's slot and webhooks.

Every write carries the job's `Claim` (its lease's fencing token): once another replica
adopted, cancelled or finished the job, this one's writes fail with LeaseLost and it stops
quietly, without a second final status, webhook or limiter release.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping

from serve_apps import metrics
from serve_apps.config import AppArgs
from serve_apps.jobs.executors import HEARTBEATS, run_in
from serve_apps.jobs.kind import JobContext, JobEnds, JobKind, JobSignals
from serve_apps.jobs.records import JobState, JobStatus, Stage
from serve_apps.jobs.webhooks import WebhookSender
from serve_apps.security.redaction import shown_error
from serve_apps.store import Claim, JobsRepository, LeaseLost

logger = logging.getLogger("flux_serve.jobs")

FINAL_WRITE_ATTEMPTS = 5
FINAL_WRITE_BACKOFF_S = 0.5


class JobRunner:
    def __init__(
        self,
        jobs: JobsRepository,
        signals: JobSignals,
        kinds: Mapping[str, JobKind],
        args: AppArgs,
        webhook_payload: Callable[[JobState], dict],
        limiter=None,
    ):
        """`kinds` maps a kind's name to it; `webhook_payload(record)` is what a webhook sends."""
        unknown = sorted(name for name in kinds if name not in jobs.record_types)
        if unknown:
            raise ValueError(
                f"job kind(s) {unknown} have no record type in the jobs repository: "
                "open it with Database.open(url, record_types={kind.name: kind.record_type, ...})."
            )
        self.jobs = jobs
        self.signals = signals
        self.kinds = dict(kinds)
        self.args = args
        self.webhooks = WebhookSender(jobs, args, webhook_payload)
        self.limiter = limiter
        self.tasks: dict[str, asyncio.Task] = {}
        self.claims: dict[str, Claim] = {}
        self.in_flight: dict[str, int] = {}
        self.background: set[asyncio.Task] = set()

    async def save(self, claim: Claim, record: JobState) -> None:
        await asyncio.to_thread(self.jobs.save, claim, record.model_copy(deep=True))

    def start(self, record: JobState, claim: Claim) -> None:
        task = asyncio.create_task(self._run(record, claim))
        self.tasks[record.id] = task
        self.claims[record.id] = claim
        self._count_in_flight(record.model, +1)

        def done(_task) -> None:
            self.tasks.pop(record.id, None)
            self.claims.pop(record.id, None)
            self._count_in_flight(record.model, -1)

        task.add_done_callback(done)

    async def hand_over(self) -> int:
        """At a stop: stop running this replica's jobs and give their leases up, so another replica (or the next
        start) adopts them at its next sweep instead of after stale_after_s. How many were handed over."""
        claims = list(self.claims.values())
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        released = await asyncio.gather(*(asyncio.to_thread(self.jobs.release, claim) for claim in claims))
        return sum(released)

    async def wait(self, job_id: str) -> None:
        """Until a job this replica runs has ended (the synchronous OpenAI route)."""
        task = self.tasks.get(job_id)
        if task is not None:
            await asyncio.shield(task)

    def _count_in_flight(self, model: str, change: int) -> None:
        self.in_flight[model] = self.in_flight.get(model, 0) + change
        metrics.QUEUE_DEPTH.set(self.in_flight[model], tags={"model": model})

    async def _run(self, record: JobState, claim: Claim) -> None:
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

    async def _attempts(self, record: JobState, claim: Claim) -> tuple[JobStatus, str | None]:
        """Run attempts until one ends the job; the final status and reason (written by the caller)."""
        kind = self.kinds[record.kind]
        timeout_s = getattr(kind, "timeout_s", None) or self.args.jobs.timeout_s  # a training has its own
        context = JobContext(record.id, self.signals, functools.partial(self.save, claim))
        while True:
            record.attempts += 1
            try:
                await asyncio.wait_for(kind.run(record, claim, context), timeout=timeout_s)
                return JobStatus.READY, None
            except JobEnds as ended:
                return ended.status, ended.reason
            except asyncio.TimeoutError:
                await self.signals.request_cancel(record.id)  # stop the work in the worker too
                return JobStatus.ERROR, f"timed out after {timeout_s:.0f} s"
            except LeaseLost:
                raise
            except Exception as error:  # a dead replica, lost actor, or a crash in a worker
                cause = getattr(error, "cause", None) or error  # a RayTaskError carries the worker's own error
                reason = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
                if record.attempts >= self.args.jobs.max_attempts:
                    return JobStatus.ERROR, f"worker failed after {record.attempts} attempt(s): {reason}"
                logger.warning("job %s attempt %d failed (%s); retrying", record.id, record.attempts, reason)

    async def _heartbeat(self, claim: Claim) -> None:
        """Renew the lease; a failed write is retried at the next beat, a lost lease stops the job. A cancel
        kept in the database is published again at each beat, so a restarted live channel loses none."""
        while True:
            await asyncio.sleep(self.args.jobs.heartbeat_s)
            try:
                if await run_in(HEARTBEATS, self.jobs.heartbeat, claim):  # never behind a backlog of other calls
                    await self.signals.cancel_found(claim.job_id)
            except LeaseLost:
                task = self.tasks.get(claim.job_id)
                if task is not None:
                    task.cancel()
                return
            except Exception:
                logger.exception("job %s: heartbeat write failed; retrying at the next beat", claim.job_id)

    async def end(self, claim: Claim, record: JobState, status: JobStatus, reason: str | None = None) -> None:
        """The final write, retried on its own (a failed write never reruns the work). The log keeps the
        reason whole; the record, which its key and webhook see, without file or storage locations."""
        if reason:
            logger.warning("job %s ended %s: %s", record.id, status.value, reason)
        record.status, record.stage, record.error = status, Stage.DONE, shown_error(record.id, reason)
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

    def after_finish(self, record: JobState) -> None:
        """The job's final state is stored: tell the live channel (readers wake, workers stop), give the
        limiter's slot back, send the webhook."""
        self._background(self.signals.ended(record.id))
        if self.limiter is not None:
            self.limiter.release.remote(record.key_id, record.id)
        if record.webhook:
            self.webhooks.start(record.id)  # durable: if this replica dies, a sweeper goes on with it

    def _background(self, work) -> None:
        """Run without waiting, keeping a reference until done (the event loop keeps only weak ones)."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
