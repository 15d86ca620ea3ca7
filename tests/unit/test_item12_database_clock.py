"""Staleness is judged by the database's clock, the one heartbeats are stamped with (issue 25): a replica
whose own clock runs 1000 s ahead adopts no live job, and still adopts one whose owner really stopped.
On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select, update

from serve_apps.store.schema import jobs
from tests.unit.test_job_core import STALE_AFTER_S, replica, submit

AHEAD_S = 1000.0


def stored_heartbeat(core, job_id: str) -> float:
    with core.jobs.engine.connect() as connection:
        return connection.execute(select(jobs.c.heartbeat_at).where(jobs.c.id == job_id)).scalar_one()


def test_a_replica_whose_clock_runs_ahead_adopts_no_live_job(database_url, tmp_path, monkeypatch):
    owner, ahead = replica(database_url, tmp_path, "a"), replica(database_url, tmp_path, "b")
    record, claim = submit(owner)
    owner.jobs.heartbeat(claim)  # the owner beats, by its own (right) clock
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + AHEAD_S)  # the adopting replica's clock is ahead

    async def look_for_orphans():
        await ahead.sweep()
        return await ahead.adopt_if_stale(ahead.jobs.load(record.id))

    assert asyncio.run(look_for_orphans()).owner == "a", "a job beating now is not stale, whatever this clock says"
    assert ahead.jobs.stale_jobs(STALE_AFTER_S) == [] and ahead.jobs.load(record.id).owner == "a"

    owner.jobs.heartbeat(claim)  # a beat written by a replica whose clock is ahead
    assert abs(stored_heartbeat(owner, record.id) - real_time()) < 5, "stamped by the database, not the writer"


def test_a_job_whose_heartbeat_is_really_old_is_adopted_by_the_replica_ahead(database_url, tmp_path, monkeypatch):
    owner, ahead = replica(database_url, tmp_path, "a"), replica(database_url, tmp_path, "b")
    record, claim = submit(owner)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + AHEAD_S)
    with owner.jobs.engine.begin() as connection:  # the owner died a while ago (by the database's clock)
        connection.execute(update(jobs).where(jobs.c.id == record.id).values(heartbeat_at=jobs.c.heartbeat_at - 60))

    async def adopt_and_run():
        adopted = await ahead.adopt_if_stale(ahead.jobs.load(record.id))
        await ahead.wait(record.id)
        return adopted

    assert asyncio.run(adopt_and_run()).owner == "b"
    assert ahead.jobs.load(record.id).status.value == "Ready" and ahead.kind.runs == [(record.id, 1)]
