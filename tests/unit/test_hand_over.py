"""A replica that stops hands its running jobs over: their leases are given up, so another replica's next
sweep adopts them at once instead of after stale_after_s (issue 25 item 13)."""

from __future__ import annotations

import asyncio

from serve_apps.jobs.records import JobStatus
from tests.unit.test_job_core import replica, submit, until


def test_a_stopping_replica_gives_its_leases_up_and_the_next_sweep_adopts_them(database_url, tmp_path):
    stopping = replica(database_url, tmp_path, "a", stale_after_s=600)
    survivor = replica(database_url, tmp_path, "b", stale_after_s=600)

    async def scenario():
        record, claim = submit(stopping, steps=20, step_s=0.05)
        stopping.start(record, claim)
        await until(lambda: stopping.signals.progress(record.id))
        assert await stopping.hand_over() == 1
        await survivor.sweep()  # without the hand-over this job stays another replica's for 600 s
        await survivor.wait(record.id)
        return record

    record = asyncio.run(scenario())
    stored = survivor.jobs.load(record.id)
    assert (stored.status, stored.owner, stored.attempts) == (JobStatus.READY, "b", 2)
