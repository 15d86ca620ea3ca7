"""Overload without losing admitted jobs, and timeouts that stop the replica's work (no Ray Serve)."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

import pytest
from ray.serve.exceptions import BackPressureError

from deployments.contracts import DenoiseOutcome, GenerationParams
from serve_apps.api.views import JobViews
from serve_apps.config import AppArgs
from serve_apps.jobs.backpressure import when_room
from serve_apps.jobs.records import JobRecord, JobStatus
from serve_apps.jobs.service import JobService
from serve_apps.security.limits import KeyLimiter
from serve_apps.security.signing import UrlSigner
from serve_apps.store import Database
from serve_apps.store.storage import JobStore, new_job_id

MODEL = "flux-2-klein-4b"


def test_service_wide_cap_answers_503_and_frees_with_releases_and_leases():
    limiter = KeyLimiter(concurrent_jobs=5, requests_per_minute=100, lease_s=10, max_queued_jobs=2)
    assert limiter.admit("k1", "a", now=0) is None
    assert limiter.admit("k2", "b", now=0) is None
    full = limiter.admit("k3", "c", now=1)
    assert full["status_code"] == HTTPStatus.SERVICE_UNAVAILABLE and full["retry_after_s"] >= 1
    assert "limits.max_queued_jobs" in full["reason"]
    limiter.release("k1", "a")
    assert limiter.admit("k3", "c", now=1) is None
    assert limiter.admit("k3", "d", now=11) is None, "k2's lease expired: its slot counts no more"


def test_per_key_refusals_stay_429():
    limiter = KeyLimiter(concurrent_jobs=1, requests_per_minute=100, lease_s=10, max_queued_jobs=100)
    limiter.admit("k", "a", now=0)
    assert limiter.admit("k", "b", now=0)["status_code"] == HTTPStatus.TOO_MANY_REQUESTS


class FakeMethod:
    def __init__(self, function):
        self.function = function

    def remote(self, *args):
        return self.function(*args)


class FakeHandle:
    """A deployment handle whose methods are coroutines in this process."""

    def __init__(self, **methods):
        for name, function in methods.items():
            setattr(self, name, FakeMethod(function))

    def options(self, **_options):
        return self


async def embedding(_prompt: str) -> str:
    return "embedding"


def make_runner(tmp_path, denoise, timeout_s: float = 30):
    args = AppArgs(storage_url=str(tmp_path), jobs={"timeout_s": timeout_s})
    store = JobStore(str(tmp_path))
    encoders = {MODEL: FakeHandle(encode=embedding)}
    denoisers = {MODEL: FakeHandle(generate=denoise)}
    service = JobService(
        Database.open(args.database_url).jobs, store, encoders, denoisers, args, {}, JobViews(UrlSigner(b"k", 60))
    )
    params = GenerationParams(prompt="p", width=64, height=64, steps=4, guidance=None, seed=1)
    record = JobRecord(id=new_job_id(), model=MODEL, key_id="0123456789ab", params=params, owner=service.replica_id)
    _stored, claim = service.jobs.create(record)
    return service, record, claim


def test_a_full_model_queue_delays_an_admitted_job_and_never_fails_it(tmp_path):
    refusals = []

    async def denoise(job, *_embeddings):
        if len(refusals) < 3:
            refusals.append(job.job_id)
            raise BackPressureError(num_queued_requests=64, max_queued_requests=64)
        return DenoiseOutcome(images=["0.jpeg"], timings_s={}, batch={})

    service, record, claim = make_runner(tmp_path, denoise)
    status, reason = asyncio.run(service.core.runner._attempts(record, claim))
    assert (status, reason) == (JobStatus.READY, None)
    assert len(refusals) == 3 and record.attempts == 1, "waiting for room is not a failed attempt"


def test_a_timed_out_job_asks_its_replica_to_stop(tmp_path):
    async def denoise(_job, *_embeddings):
        await asyncio.sleep(30)

    service, record, claim = make_runner(tmp_path, denoise, timeout_s=0.2)
    status, reason = asyncio.run(service.core.runner._attempts(record, claim))
    assert status == JobStatus.ERROR and "timed out" in reason
    assert service.jobs.cancel_requested(record.id), "the cancel is kept in the database"
    assert asyncio.run(service.core.signals.cancel_requested(record.id)), "the denoiser sees it at its next step"


def test_when_room_returns_what_the_call_returns():
    calls = []

    async def call():
        calls.append(1)
        if len(calls) == 1:
            raise BackPressureError(num_queued_requests=1, max_queued_requests=1)
        return "done"

    assert asyncio.run(when_room(call)) == "done" and len(calls) == 2


def test_an_idempotent_replay_at_the_keys_limit_gets_its_job(tmp_path):
    from deployments.contracts import GenerationDefaults
    from serve_apps.api.protocol import GenerateRequest
    from serve_apps.jobs.submission import JobSubmitter, LimitExceeded
    from serve_apps.store import IdempotencyConflict

    limiter = KeyLimiter(concurrent_jobs=1, requests_per_minute=100, lease_s=60, max_queued_jobs=100)

    async def admit(key_id, job_id):
        return limiter.admit(key_id, job_id)

    args = AppArgs(storage_url=str(tmp_path))
    submitter = JobSubmitter(
        Database.open(args.database_url).jobs,
        {MODEL: GenerationDefaults(steps=4, guidance=1.0, distilled=True)},
        args,
        limiter=FakeHandle(admit=admit, release=limiter.release),
    )
    request = GenerateRequest(prompt="a cat", width=256, height=256)

    def submit(body, idempotency_key):
        return asyncio.run(submitter.submit(MODEL, body, "0123456789ab", "", "me", idempotency_key))

    first, claim = submit(request, "k-1")
    assert claim is not None
    replay, replay_claim = submit(request, "k-1")
    assert (replay.id, replay_claim) == (first.id, None), "the key's one slot is the first job's: the replay gets it"
    with pytest.raises(IdempotencyConflict, match="use a new key"):
        submit(GenerateRequest(prompt="a dog", width=256, height=256), "k-1")
    with pytest.raises(LimitExceeded):
        submit(request, "k-2")


def test_a_refused_submit_fetches_decodes_and_stores_nothing(tmp_path):
    """Admission comes before the input images: a submit over the limits costs no fetch, decode or write."""
    from deployments.contracts import GenerationDefaults
    from serve_apps.api.protocol import GenerateRequest
    from serve_apps.jobs.submission import JobSubmitter, LimitExceeded

    async def refuse(_key_id, _job_id):
        return {"reason": "over the cap", "retry_after_s": 5, "status_code": HTTPStatus.SERVICE_UNAVAILABLE}

    args = AppArgs(storage_url=str(tmp_path))
    submitter = JobSubmitter(
        Database.open(args.database_url).jobs,
        {MODEL: GenerationDefaults(steps=4, guidance=1.0, distilled=True)},
        args,
        limiter=FakeHandle(admit=refuse, release=lambda *_: None),
    )
    resolved = []

    async def resolve(request, key_id):
        resolved.append(key_id)
        raise AssertionError("inputs resolved for a submit the limiter refused")

    submitter.inputs.resolve = resolve
    body = GenerateRequest(prompt="edit it", input_image="https://example.com/photo.png")
    with pytest.raises(LimitExceeded, match="over the cap"):
        asyncio.run(submitter.submit(MODEL, body, "0123456789ab", "", "me", None))
    assert resolved == []
