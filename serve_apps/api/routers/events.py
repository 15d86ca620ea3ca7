"""A job's live events (Server-Sent Events), opened with a key or with a short-lived signed URL.

A browser's `EventSource` cannot send headers, so `POST /v1/jobs/{id}/events-token` gives the
key's owner a signed `events_url` (valid `result_url_ttl_s`) that opens the stream without one.

Streams are counted in this replica against the job's key (limits.max_streams_per_key, 429) and in all
(limits.max_streams_per_replica, 503), and each lives at most limits.stream_max_life_s; the reconnect
(with Last-Event-ID) is checked like a first open, so a revoked key or an expired URL ends there.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from http import HTTPStatus

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel

from serve_apps.api.events import REREAD_S, job_events, parse_last_event_id
from serve_apps.api.job_pollers import JobPollers
from serve_apps.api.protocol import ErrorResponse
from serve_apps.api.routers.deps import ERRORS, AppServices, own_job, require_key, services
from serve_apps.api.stream_slots import StreamRefused, StreamSlots
from serve_apps.security.auth import key_from_headers

router = APIRouter(tags=["jobs"])

EVENTS_PATH = "/v1/jobs/{job_id}/events"


class EventsToken(BaseModel):
    events_url: str
    expires_at: int


def events_path(job_id: str) -> str:
    return EVENTS_PATH.format(job_id=job_id)


async def job_view(app_services: AppServices, job_id: str) -> dict | None:
    """The job as `GET /v1/jobs/{id}` shows it (adopting it if its replica stopped), or None."""
    service = app_services.service
    record = await service.load(job_id)
    if record is None:
        return None
    record = await service.adopt_if_stale(record)
    progress, position = await service.load_progress(record), await service.queue_position(record)
    return app_services.views.job(record, progress, position).model_dump(mode="json")


async def events_access(
    request: Request,
    job_id: str,
    exp: int | None = Query(None, ge=0, le=2**62, description="from POST /v1/jobs/{id}/events-token"),
    sig: str | None = Query(None, max_length=128),
) -> str:
    """A key that owns the job, or a valid signed URL for it; else 401/403/404 before any event.
    Returns the job's key id, which the stream is counted against."""
    if key_from_headers(request.headers) or (exp is None and sig is None):
        key_id = await require_key(request)
        await own_job(request, job_id, key_id)
        return key_id
    if services(request).signer.check(events_path(job_id), exp, sig) is not None:
        raise HTTPException(
            HTTPStatus.FORBIDDEN,
            "This events URL is expired or its signature does not match: ask POST "
            f"/v1/jobs/{job_id}/events-token for a fresh one, or send your key as `x-key`.",
        )
    record = await services(request).service.load(job_id)
    if record is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, f"No job {job_id!r}.")
    return record.key_id


def job_pollers(request: Request) -> JobPollers:
    """This replica's job pollers, shared by the streams of each job, made on first use."""
    state = request.app.state
    if getattr(state, "job_pollers", None) is None:
        state.job_pollers = JobPollers()
    return state.job_pollers


def stream_slots(request: Request) -> StreamSlots:
    """This replica's stream counts, made on first use from limits."""
    state = request.app.state
    if getattr(state, "stream_slots", None) is None:
        limits = services(request).service.args.limits
        state.stream_slots = StreamSlots(limits.max_streams_per_key, limits.max_streams_per_replica)
    return state.stream_slots


async def stream_slot(request: Request, key_id: str = Depends(events_access)) -> AsyncIterator[None]:
    """One of the key's and the replica's stream slots, held until the stream ends (429/503 over a cap).
    Async, so the counts change on the event loop only."""
    slots = stream_slots(request)
    try:
        slots.take(key_id)
    except StreamRefused as refused:
        raise HTTPException(
            refused.status_code, str(refused), headers={"Retry-After": str(refused.retry_after_s)}
        ) from None
    try:
        yield
    finally:
        slots.give_back(key_id)


@router.post("/v1/jobs/{job_id}/events-token", response_model=EventsToken, responses=ERRORS)
async def events_token(request: Request, job_id: str, key_id: str = Depends(require_key)) -> EventsToken:
    """A signed URL of this job's events stream, for clients that cannot send headers (`EventSource`)."""
    await own_job(request, job_id, key_id)
    signer = services(request).signer
    now = time.time()
    base = str(request.base_url).rstrip("/")
    return EventsToken(events_url=base + signer.sign(events_path(job_id), now), expires_at=int(now + signer.ttl_s))


@router.get(
    EVENTS_PATH,
    response_class=EventSourceResponse,
    dependencies=[Depends(stream_slot)],
    responses={
        **ERRORS,
        HTTPStatus.FORBIDDEN.value: {"model": ErrorResponse},
        HTTPStatus.TOO_MANY_REQUESTS.value: {
            "model": ErrorResponse,
            "description": "this key holds limits.max_streams_per_key streams here; see Retry-After",
        },
        HTTPStatus.SERVICE_UNAVAILABLE.value: {
            "model": ErrorResponse,
            "description": "this replica holds limits.max_streams_per_replica streams; see Retry-After",
        },
    },
)
async def job_events_stream(
    request: Request, job_id: str, last_event_id: str | None = Header(None)
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: `queued` {queue_position}, `progress` {step, total}, then `done` or `error`
    (the job as `GET /v1/jobs/{id}` shows it) and the stream ends. Each event has an `id`;
    reconnect with `Last-Event-ID` to get only what you have not seen. The streams of a job on this replica
    share one reader, which wakes on the live channel's news of the job and reads the database at least
    every REREAD_S. A stream ends after limits.stream_max_life_s even while the job runs: reconnect with
    `Last-Event-ID` (EventSource does)."""
    app_services = services(request)  # not the request: the job's poller may outlive this stream
    service = app_services.service
    max_life_s = service.args.limits.stream_max_life_s

    async def changed(version: int) -> int:
        return await service.wait_for_change(job_id, version, REREAD_S)

    async def read() -> dict | None:
        return await job_view(app_services, job_id)

    events = job_events(
        read, changed, parse_last_event_id(last_event_id), max_life_s, job_id=job_id, pollers=job_pollers(request)
    )
    async with aclosing(events):  # closed with this stream, whichever way it ends: the poller counts subscribers
        async for event in events:
            yield ServerSentEvent(event=event.name, id=str(event.id), data=event.data)
