"""JobService logic that needs storage but no Ray: queue position, cancel of a queued job."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
from fastapi import FastAPI, Request

from deployments.contracts import GenerationParams
from serve_apps.api.protocol import GenerateRequest
from serve_apps.api.routers.deps import submit_job
from serve_apps.api.views import JobViews
from serve_apps.config import AppArgs
from serve_apps.jobs.records import JobRecord
from serve_apps.jobs.service import JobService
from serve_apps.security.signing import UrlSigner
from serve_apps.store import Database, IdempotencyConflict
from serve_apps.store.storage import JobStore, new_job_id


def make_service(tmp_path) -> JobService:
    args = AppArgs(storage_url=str(tmp_path))
    return JobService(
        Database.open(args.database_url).jobs, JobStore(str(tmp_path)), {}, {}, args, {}, JobViews(UrlSigner(b"k", 60))
    )


def pending_record(model: str, created_at: float, stage: str = "queued") -> JobRecord:
    params = GenerationParams(prompt="p", width=64, height=64, steps=4, guidance=None, seed=1)
    return JobRecord(
        id=new_job_id(),
        model=model,
        key_id="0123456789ab",
        stage=stage,
        created_at=created_at,
        owner="other",
        params=params,
    )


def test_queue_position_counts_earlier_waiting_jobs_of_the_same_model(tmp_path):
    service = make_service(tmp_path)
    running = pending_record("a", 1, stage="denoising")
    earlier = pending_record("a", 2)
    other_model = pending_record("b", 3)
    mine = pending_record("a", 4)
    later = pending_record("a", 5)
    for record in (running, earlier, other_model, mine, later):
        service.jobs.create(record)
    assert asyncio.run(service.queue_position(mine)) == 1
    assert asyncio.run(service.queue_position(earlier)) == 0
    assert asyncio.run(service.queue_position(running)) is None


def test_cancelling_an_orphaned_queued_job_ends_it_at_once(tmp_path):
    service = make_service(tmp_path)
    record = pending_record("a", 1)
    service.jobs.create(record)
    asyncio.run(service.cancel(record))
    stored = service.jobs.load(record.id)
    assert stored.status == "Cancelled" and stored.error == "cancelled by the user"
    assert service.jobs.count_pending() == 0
    assert service.jobs.cancel_requested(record.id)
    assert asyncio.run(service.core.signals.cancel_requested(record.id)), "a worker still on it would stop"


def test_every_status_but_pending_is_final_content_moderated_included():
    record = pending_record("a", 1)
    record.status = "Content Moderated"
    assert record.is_final, "a job whose images were moderated has ended: no worker may write it again"
    record.status = "Pending"
    assert not record.is_final


def test_an_idempotency_key_reused_with_another_body_is_422_saying_to_use_a_new_key():
    class Refusing:
        async def submit(self, *_args):
            raise IdempotencyConflict("this Idempotency-Key was used with a different request body; use a new key.")

    app = FastAPI()
    app.state.services = SimpleNamespace(service=Refusing())

    @app.post("/v1/m")
    async def route(request: Request, body: GenerateRequest):
        return await submit_job(request, "m", body, "0123456789ab", "k-1")

    async def call():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return await http.post("/v1/m", json={"prompt": "p"})

    response = asyncio.run(call())
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["header", "idempotency-key"] and "use a new key" in detail["msg"]


def test_validation_patterns_refuse_a_trailing_newline():
    from lora.registry import ADAPTER_ID_PATTERN
    from serve_apps.plan import GPU_SPEC
    from serve_apps.store.storage import REFERENCE_NAME_PATTERN, UPLOAD_ID_PATTERN, UPLOAD_KEY_PATTERN, is_job_id

    assert is_job_id("0" * 32) and not is_job_id("0" * 32 + "\n")
    assert UPLOAD_KEY_PATTERN.match("0" * 12) and not UPLOAD_KEY_PATTERN.match("0" * 12 + "\n")
    assert not UPLOAD_ID_PATTERN.match("upload_" + "0" * 32 + "\n")
    assert not REFERENCE_NAME_PATTERN.match("0" * 64 + ".png\n")
    assert ADAPTER_ID_PATTERN.match("style-1") and not ADAPTER_ID_PATTERN.match("style-1\n")
    assert not GPU_SPEC.match("2x24GB\n")
