"""A job's live events (Server-Sent Events), opened with a key or with a short-lived signed URL.

A browser's `EventSource` cannot send headers, so `POST /v1/jobs/{id}/events-token` gives the
key's owner a signed `events_url` (valid `result_url_ttl_s`) that opens the stream without one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from http import HTTPStatus

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel

from serve_apps.api.events import REREAD_S, job_events, parse_last_event_id
from serve_apps.api.protocol import ErrorResponse
from serve_apps.api.routers.deps import ERRORS, own_job, require_key, services
from serve_apps.security.auth import key_from_headers

router = APIRouter(tags=["jobs"])

EVENTS_PATH = "/v1/jobs/{job_id}/events"


class EventsToken(BaseModel):
    events_url: str
    expires_at: int


def events_path(job_id: str) -> str:
    return EVENTS_PATH.format(job_id=job_id)


async def job_view(request: Request, job_id: str) -> dict | None:
    """The job as `GET /v1/jobs/{id}` shows it (adopting it if its replica stopped), or None."""
    service = services(request).service
    record = await service.load(job_id)
    if record is None:
        return None
    record = await service.adopt_if_stale(record)
    progress, position = await service.load_progress(record), await service.queue_position(record)
    return services(request).views.job(record, progress, position).model_dump(mode="json")


async def events_access(
    request: Request,
    job_id: str,
    exp: int | None = Query(None, ge=0, le=2**62, description="from POST /v1/jobs/{id}/events-token"),
    sig: str | None = Query(None, max_length=128),
) -> None:
    """A key that owns the job, or a valid signed URL for it; else 401/403/404 before any event."""
    if key_from_headers(request.headers) or (exp is None and sig is None):
        await own_job(request, job_id, await require_key(request))
        return
    if services(request).signer.check(events_path(job_id), exp, sig) is not None:
        raise HTTPException(
            HTTPStatus.FORBIDDEN,
            "This events URL is expired or its signature does not match: ask POST "
            f"/v1/jobs/{job_id}/events-token for a fresh one, or send your key as `x-key`.",
        )
    if await services(request).service.load(job_id) is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, f"No job {job_id!r}.")


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
    dependencies=[Depends(events_access)],
    responses={**ERRORS, HTTPStatus.FORBIDDEN.value: {"model": ErrorResponse}},
)
async def job_events_stream(
    request: Request, job_id: str, last_event_id: str | None = Header(None)
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: `queued` {queue_position}, `progress` {step, total}, then `done` or `error`
    (the job as `GET /v1/jobs/{id}` shows it) and the stream ends. Each event has an `id`;
    reconnect with `Last-Event-ID` to get only what you have not seen. The stream wakes on the live
    channel's news of the job, and reads the database at least every REREAD_S."""
    service = services(request).service

    async def changed(version: int) -> int:
        return await service.wait_for_change(job_id, version, REREAD_S)

    async for event in job_events(lambda: job_view(request, job_id), changed, parse_last_event_id(last_event_id)):
        yield ServerSentEvent(event=event.name, id=str(event.id), data=event.data)
