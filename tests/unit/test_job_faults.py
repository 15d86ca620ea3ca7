"""Faults injected into a real JobRunner and JobSubmitter (SQLite, a local store, in-process handles):
failed heartbeats, failed final writes and failed submits, each must leave the job and the key's
slot right."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import OperationalError

from deployments.contracts import DenoiseOutcome, GenerationDefaults
from serve_apps.api.protocol import GenerateRequest
from serve_apps.jobs import running
from serve_apps.jobs.records import JobStatus
from tests.unit.test_overload import MODEL, FakeHandle, make_runner


class FlakyWrites:
    """Make the first `failures` calls of `db.<method>` that `when(record)` selects raise a database error."""

    def __init__(self, db, method: str, failures: int, when=lambda *_: True):
        self.calls, self.failed = 0, 0
        real = getattr(db, method)

        def flaky(*args):
            self.calls += 1
            if self.failed < failures and when(*args):
                self.failed += 1
                raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))
            return real(*args)

        setattr(db, method, flaky)


def test_failed_heartbeat_writes_are_retried_and_the_job_keeps_its_lease(tmp_path):
    async def denoise(_job, *_embeddings):
        await asyncio.sleep(0.6)
        return DenoiseOutcome(images=["0.jpeg"], timings_s={}, batch={})

    service, record, claim = make_runner(tmp_path, denoise)
    service.args.jobs.heartbeat_s = 0.05
    heartbeats = FlakyWrites(service.jobs, "heartbeat", failures=3)
    asyncio.run(service.core.runner._run(record, claim))
    assert heartbeats.failed == 3 and heartbeats.calls > 3, "the beats after the failed ones went on"
    assert service.jobs.load(record.id).status == JobStatus.READY


def test_a_failed_final_write_is_retried_alone_and_never_reruns_the_gpu_work(tmp_path, monkeypatch):
    monkeypatch.setattr(running, "FINAL_WRITE_BACKOFF_S", 0.01)
    runs = []

    async def denoise(job, *_embeddings):
        runs.append(job.job_id)
        return DenoiseOutcome(images=["0.jpeg"], timings_s={}, batch={})

    service, record, claim = make_runner(tmp_path, denoise)
    final_saves = FlakyWrites(service.jobs, "save", failures=2, when=lambda _claim, saved: saved.status != "Pending")
    asyncio.run(service.core.runner._run(record, claim))
    assert final_saves.failed == 2 and len(runs) == 1
    stored = service.jobs.load(record.id)
    assert stored.status == JobStatus.READY and stored.attempts == 1 and stored.images == ["0.jpeg"]


def test_a_submit_that_fails_to_store_gives_its_limiter_slot_back(tmp_path):
    held: set[str] = set()

    async def admit(_key_id, job_id):
        held.add(job_id)
        return None

    def release(_key_id, job_id):  # sent without waiting, as to a Ray handle
        held.discard(job_id)

    async def never(_job):
        raise AssertionError("a job that was never stored must not run")

    service, _record, _claim = make_runner(tmp_path, never)
    submitter = service.submitter
    submitter.defaults = {MODEL: GenerationDefaults(steps=4, guidance=1.0, distilled=True)}
    submitter.limiter = FakeHandle(admit=admit, release=release)
    FlakyWrites(service.jobs, "create", failures=1)
    request = GenerateRequest(prompt="a red circle on a blue background", width=64, height=64)

    with pytest.raises(OperationalError):
        asyncio.run(submitter.submit(MODEL, request, "0123456789ab", "http://test", "me", None))
    assert held == set(), "the slot of the job that was never stored is free again"
