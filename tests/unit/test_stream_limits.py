"""Event streams capped per key and per ingress replica, each with a maximum life (no Ray)."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from serve_apps.api.routers import events
from serve_apps.api.stream_slots import StreamRefused, StreamSlots
from serve_apps.config import LimitArgs
from serve_apps.security.auth import ApiKeys, hash_key
from serve_apps.security.signing import UrlSigner

KEYS = ["key-a", "key-b", "key-c"]
JOB_ID = "0" * 32


def test_slots_refuse_over_the_key_cap_then_the_replica_cap_and_free_on_give_back():
    slots = StreamSlots(per_key=1, per_replica=2)
    slots.take("a")
    with pytest.raises(StreamRefused) as refused:
        slots.take("a")
    assert refused.value.status_code == HTTPStatus.TOO_MANY_REQUESTS and "limits.max_streams_per_key" in str(
        refused.value
    )
    slots.take("b")
    with pytest.raises(StreamRefused) as refused:
        slots.take("c")
    assert refused.value.status_code == HTTPStatus.SERVICE_UNAVAILABLE and refused.value.retry_after_s > 0
    slots.give_back("a")
    slots.take("c")
    assert slots.open_total == 2


def test_stream_limits_are_configured_with_teaching_defaults():
    limits = LimitArgs()
    assert (limits.max_streams_per_key, limits.max_streams_per_replica, limits.stream_max_life_s) == (32, 200, 300)
    assert all(LimitArgs.model_fields[name].description for name in ("max_streams_per_key", "stream_max_life_s"))


class FakeService:
    """Every job is the asking key's and waits in the queue; the live channel says nothing."""

    def __init__(self, limits: LimitArgs):
        self.args = SimpleNamespace(limits=limits)

    async def load(self, job_id: str, key_id: str | None = None):
        return SimpleNamespace(id=job_id, key_id=key_id or "owner")

    async def adopt_if_stale(self, record):
        return record

    async def load_progress(self, _record):
        return None

    async def queue_position(self, _record):
        return 3

    async def wait_for_change(self, _job_id: str, version: int, _timeout_s: float) -> int:
        await asyncio.sleep(0.02)
        return version


def make_app(limits: LimitArgs) -> FastAPI:
    app = FastAPI()
    pending = {"status": "Pending", "stage": "queued", "attempts": 0, "queue_position": 3, "progress": None}
    views = SimpleNamespace(job=lambda *_args: SimpleNamespace(model_dump=lambda mode: pending))
    app.state.services = SimpleNamespace(
        service=FakeService(limits),
        keys=ApiKeys({hash_key(key) for key in KEYS}),
        signer=UrlSigner(b"k", 60),
        views=views,
    )
    app.include_router(events.router)
    return app


def test_streams_over_the_caps_are_refused_and_each_stream_ends_at_its_life():
    app = make_app(LimitArgs(max_streams_per_key=1, max_streams_per_replica=2, stream_max_life_s=0.6))

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:

            async def open_stream(key: str, delay_s: float = 0.0) -> httpx.Response:
                await asyncio.sleep(delay_s)
                return await http.get(events.events_path(JOB_ID), headers={"x-key": key})

            first, again, other, third = await asyncio.gather(
                open_stream(KEYS[0]), open_stream(KEYS[0], 0.2), open_stream(KEYS[1], 0.2), open_stream(KEYS[2], 0.3)
            )
            later = await open_stream(KEYS[0])
            return first, again, other, third, later

    first, again, other, third, later = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert first.status_code == HTTPStatus.OK and "event: queued" in first.text
    assert "event: done" not in first.text and "event: error" not in first.text, "ended by its life, not the job"
    assert again.status_code == HTTPStatus.TOO_MANY_REQUESTS and again.headers["retry-after"]
    assert "limits.max_streams_per_key" in again.json()["detail"]
    assert other.status_code == HTTPStatus.OK
    assert third.status_code == HTTPStatus.SERVICE_UNAVAILABLE and third.headers["retry-after"]
    assert later.status_code == HTTPStatus.OK, "the slots came back when the streams ended"
    assert app.state.stream_slots.open_total == 0


def test_a_revoked_key_cannot_resume_its_stream():
    app = make_app(LimitArgs(stream_max_life_s=0.2))

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            first = await http.get(events.events_path(JOB_ID), headers={"x-key": KEYS[0]})
            app.state.services.keys = ApiKeys({hash_key(KEYS[1])})  # KEYS[0] revoked
            resumed = await http.get(events.events_path(JOB_ID), headers={"x-key": KEYS[0], "last-event-id": "998"})
            return first, resumed

    first, resumed = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert first.status_code == HTTPStatus.OK
    assert resumed.status_code == HTTPStatus.UNAUTHORIZED
