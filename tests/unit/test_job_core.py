"""The job core with a second kind that is not about images: a counter that sleeps between steps,
reports progress and honours cancel. Lease, final write, a killed runner adopted by another replica,
cancel (queued and running), retries and timeout, on SQLite and on PostgreSQL, with no Ray."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import pytest
from pydantic import BaseModel

from deployments.progress import Progress
from serve_apps.config import AppArgs
from serve_apps.jobs.core import JobCore
from serve_apps.jobs.kind import JobContext
from serve_apps.jobs.records import GENERATE, JobRecord, JobState, JobStatus, Stage
from serve_apps.live import InProcessChannel
from serve_apps.store import Claim, Database, JobsRepository, LeaseLost
from serve_apps.store.storage import JobStore, new_job_id

COUNT = "count"
STALE_AFTER_S = 0.6


class CountParams(BaseModel):
    steps: int
    step_s: float = 0.02
    failing_attempts: int = 0


class CountRecord(JobState):
    kind: Literal["count"] = COUNT
    params: CountParams
    counted: int = 0


class CountKind:
    """Counts to `params.steps`, one sleep a step; its first `failing_attempts` attempts die. `runs`:
    the (job, attempt) pairs that got past their first write."""

    name = COUNT
    record_type = CountRecord

    def __init__(self):
        self.runs: list[tuple[str, int]] = []

    async def run(self, record: CountRecord, claim: Claim, context: JobContext) -> None:
        record.stage = Stage.RUNNING
        await context.save(record)  # LeaseLost here once another replica owns or ended the job
        self.runs.append((record.id, record.attempts))
        if record.attempts <= record.params.failing_attempts:
            raise RuntimeError("worker lost")
        for step in range(1, record.params.steps + 1):
            await context.check_cancel()
            await asyncio.sleep(record.params.step_s)
            record.counted = step
            await context.report_progress(step, record.params.steps)


class Releases:
    """A limiter handle that remembers the slots given back (sent without waiting, as to Ray)."""

    def __init__(self):
        self.released: list[str] = []
        self.release = self

    def remote(self, _key_id: str, job_id: str) -> None:
        self.released.append(job_id)


def open_jobs(database_url: str) -> JobsRepository:
    """One replica's jobs repository: it runs both kinds."""
    return Database.open(database_url, {GENERATE: JobRecord, COUNT: CountRecord}).jobs


class RecordingChannel(InProcessChannel):
    """A live channel that remembers every progress published on it."""

    def __init__(self):
        super().__init__()
        self.published: list[Progress] = []

    async def publish(self, progress: Progress) -> None:
        self.published.append(progress)
        await super().publish(progress)


def replica(database_url: str, tmp_path, name: str, channel=None, **jobs_args) -> JobCore:
    """A job core as one ingress replica holds it; replicas share the database, the store and (unless
    given their own) this process's live channel, as replicas of a cluster share its channel actor."""
    jobs = {"heartbeat_s": 0.05, "stale_after_s": STALE_AFTER_S, "max_attempts": 3, **jobs_args}
    args = AppArgs(storage_url=str(tmp_path), jobs=jobs)
    store = JobStore(str(tmp_path / "store"))
    kinds = [CountKind()]
    core = JobCore(open_jobs(database_url), store, kinds, args, dict, Releases(), channel, replica_id=name)
    core.kind = core.runner.kinds[COUNT]
    return core


def submit(core: JobCore, steps: int = 3, **params) -> tuple[CountRecord, Claim]:
    record = CountRecord(
        id=new_job_id(),
        model="counter",
        key_id="0123456789ab",
        owner=core.replica_id,
        params={"steps": steps, **params},
    )
    stored, claim = core.jobs.create(record)
    return stored, claim


async def until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "the job never got there"
        await asyncio.sleep(0.02)


def test_a_second_kind_runs_under_its_lease_to_one_final_write(database_url, tmp_path):
    channel = RecordingChannel()
    core = replica(database_url, tmp_path, "a", channel)

    async def scenario():
        record, claim = submit(core)
        core.start(record, claim)
        await core.wait(record.id)
        return record, claim

    record, claim = asyncio.run(scenario())
    stored = core.jobs.load(record.id)
    assert isinstance(stored, CountRecord) and stored.kind == COUNT
    assert (stored.status, stored.stage, stored.counted, stored.attempts) == (JobStatus.READY, Stage.DONE, 3, 1)
    assert [(p.job_id, p.step, p.of) for p in channel.published] == [(record.id, step, 3) for step in (1, 2, 3)]
    assert asyncio.run(channel.progress(record.id)).step == 3, "its last progress is shown with its final state"
    assert asyncio.run(channel.cancel_requested(record.id)), "whatever still works on an ended job stops"
    assert core.runner.limiter.released == [record.id], "the slot is given back once"
    with pytest.raises(LeaseLost):
        core.jobs.heartbeat(claim)  # nothing renews a finished job's lease


def test_a_killed_runner_is_adopted_by_another_replica_once_its_lease_is_stale(database_url, tmp_path):
    first, second = replica(database_url, tmp_path, "a"), replica(database_url, tmp_path, "b")

    async def scenario():
        record, claim = submit(first, steps=10, step_s=0.05)
        first.start(record, claim)
        await until(lambda: first.signals.progress(record.id))
        first.runner.tasks[record.id].cancel()  # the replica dies: no final write, no more heartbeats
        await asyncio.gather(*first.runner.tasks.values(), return_exceptions=True)
        killed = first.jobs.load(record.id)
        await second.sweep()
        assert second.jobs.load(record.id).owner == "a", "a lease younger than stale_after_s is left alone"
        await asyncio.sleep(STALE_AFTER_S)
        await second.sweep()
        await second.wait(record.id)
        return record, claim, killed

    record, old_claim, killed = asyncio.run(scenario())
    assert (killed.status, killed.owner, killed.stage) == (JobStatus.PENDING, "a", Stage.RUNNING)
    stored = second.jobs.load(record.id)
    assert (stored.status, stored.owner, stored.counted, stored.attempts) == (JobStatus.READY, "b", 10, 2)
    assert second.kind.runs == [(record.id, 2)] and first.runner.limiter.released == []
    with pytest.raises(LeaseLost):
        first.jobs.save(old_claim, killed)  # the dead replica's late write changes nothing


def test_a_queued_job_cancelled_from_any_replica_never_runs(database_url, tmp_path):
    owner, other = replica(database_url, tmp_path, "a"), replica(database_url, tmp_path, "b")
    record, claim = submit(owner)
    ended = asyncio.run(other.cancel(record))
    assert (ended.status, ended.error) == (JobStatus.CANCELLED, "cancelled by the user")

    async def start_anyway():
        owner.start(record, claim)
        await owner.wait(record.id)

    asyncio.run(start_anyway())
    assert owner.kind.runs == [], "its owner lost the lease at the cancel: its first write stopped it"
    assert asyncio.run(owner.signals.progress(record.id)) is None
    assert other.jobs.load(record.id).status == JobStatus.CANCELLED
    assert other.runner.limiter.released == [record.id] and owner.runner.limiter.released == []


def test_a_running_job_cancelled_from_another_replica_stops_at_its_next_step(database_url, tmp_path):
    owner, other = replica(database_url, tmp_path, "a"), replica(database_url, tmp_path, "b")

    async def scenario():
        record, claim = submit(owner, steps=200)
        owner.start(record, claim)
        await until(lambda: owner.signals.progress(record.id))
        still_running = await other.cancel(other.jobs.load(record.id))
        await owner.wait(record.id)
        return record, still_running

    record, still_running = asyncio.run(scenario())
    assert still_running.status == JobStatus.PENDING, "a running job ends where it runs"
    stored = owner.jobs.load(record.id)
    assert (stored.status, stored.error) == (JobStatus.CANCELLED, "cancelled by the user")
    assert 1 <= stored.counted < 200
    assert owner.runner.limiter.released == [record.id]


def test_a_cancel_the_live_channel_lost_is_published_again_by_the_heartbeat(database_url, tmp_path):
    """The other replica's channel is not the owner's (as if the channel actor restarted between the
    cancel and the worker's next question): the cancel reaches the job through the database."""
    owner = replica(database_url, tmp_path, "a", InProcessChannel())
    other = replica(database_url, tmp_path, "b", InProcessChannel())

    async def scenario():
        record, claim = submit(owner, steps=200)
        owner.start(record, claim)
        await until(lambda: owner.signals.progress(record.id))
        await other.cancel(other.jobs.load(record.id))
        await owner.wait(record.id)
        return record

    record = asyncio.run(scenario())
    stored = owner.jobs.load(record.id)
    assert (stored.status, stored.error) == (JobStatus.CANCELLED, "cancelled by the user")
    assert stored.counted < 200


def test_a_failed_attempt_is_retried_up_to_max_attempts(database_url, tmp_path):
    core = replica(database_url, tmp_path, "a")

    async def run(**params) -> CountRecord:
        record, claim = submit(core, **params)
        core.start(record, claim)
        await core.wait(record.id)
        return core.jobs.load(record.id)

    recovered = asyncio.run(run(failing_attempts=1))
    assert (recovered.status, recovered.attempts, recovered.counted) == (JobStatus.READY, 2, 3)
    failed = asyncio.run(run(failing_attempts=5))
    assert failed.status == JobStatus.ERROR and failed.attempts == 3
    assert failed.error == "worker failed after 3 attempt(s): RuntimeError: worker lost"


def test_a_job_over_its_timeout_ends_and_is_asked_to_stop(tmp_path):
    core = replica(f"sqlite:///{tmp_path / 'jobs.db'}", tmp_path, "a", timeout_s=0.2)

    async def scenario():
        record, claim = submit(core, steps=100, step_s=0.05)
        core.start(record, claim)
        await core.wait(record.id)
        return record

    record = asyncio.run(scenario())
    stored = core.jobs.load(record.id)
    assert stored.status == JobStatus.ERROR and stored.error.startswith("timed out after")
    assert core.jobs.cancel_requested(record.id), "the cancel is kept in the database"
    assert asyncio.run(core.signals.cancel_requested(record.id)), "the worker sees the cancel at its next step"


def test_a_replica_leaves_alone_the_jobs_of_a_kind_it_does_not_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    counting = replica(url, tmp_path, "a")
    record, _claim = submit(counting)
    generation_only = Database.open(url).jobs
    assert generation_only.load(record.id) is None
    assert generation_only.stale_jobs(stale_after_s=-60) == [] and generation_only.quarantine_unreadable() == []
    assert counting.jobs.load(record.id).status == JobStatus.PENDING
    with pytest.raises(ValueError, match="record_types"):
        JobCore(generation_only, counting.store, [CountKind()], counting.runner.args, dict)
