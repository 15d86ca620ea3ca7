"""Job status, BFL's get_result, history and cancel. Progress is the live channel's, the rest the database's."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from serve_apps.api.protocol import (
    ErrorResponse,
    GetResultResponse,
    JobListResponse,
    JobResponse,
    JobStatus,
    SubmitResponse,
)
from serve_apps.api.routers.deps import ERRORS, over_limit, own_job, require_key, services
from serve_apps.api.routers.generation import submit_response
from serve_apps.jobs.reruns import RerunRefused
from serve_apps.jobs.submission import LimitExceeded
from serve_apps.security.limits import OverLimit

router = APIRouter(tags=["jobs"], responses=ERRORS)


@router.get("/v1/get_result", response_model=GetResultResponse)  # every key, null or not, as BFL sends them
async def get_result(request: Request, id: str, key_id: str = Depends(require_key)) -> GetResultResponse:
    service = services(request).service
    record = await service.load(id, key_id)
    if record is None:
        return GetResultResponse(id=id, status=JobStatus.NOT_FOUND)
    record = await service.adopt_if_stale(record)
    return services(request).views.bfl_result(record, await service.load_progress(record))


@router.get("/v1/jobs", response_model=JobListResponse)
async def list_jobs(
    request: Request,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, max_length=64, pattern=r"^[0-9]{16}_[0-9a-f]{32}$"),
    key_id: str = Depends(require_key),
) -> JobListResponse:
    service, views = services(request).service, services(request).views
    records, next_cursor = await service.history(key_id, limit, cursor)
    return JobListResponse(jobs=[views.job(record) for record in records], next_cursor=next_cursor)


@router.get("/v1/jobs/{job_id}", response_model=JobResponse)
async def get_job(request: Request, job_id: str, key_id: str = Depends(require_key)) -> JobResponse:
    service = services(request).service
    record = await own_job(request, job_id, key_id)
    progress = await service.load_progress(record)
    eta_s = await service.eta_s(record, progress)
    return services(request).views.job(record, progress, await service.queue_position(record), eta_s)


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobResponse)
async def cancel_job(request: Request, job_id: str, key_id: str = Depends(require_key)) -> JobResponse:
    service = services(request).service
    record = await service.cancel(await own_job(request, job_id, key_id))
    return services(request).views.job(record, await service.load_progress(record))


RERUN_ERRORS = {
    HTTPStatus.CONFLICT.value: {"model": ErrorResponse, "description": "the job is not Ready, or a LoRA changed file"},
    HTTPStatus.GONE.value: {"model": ErrorResponse, "description": "a LoRA or an input image it used is gone"},
    HTTPStatus.SERVICE_UNAVAILABLE.value: {"model": ErrorResponse, "description": "the service is at capacity"},
}


@router.post("/v1/jobs/{job_id}/rerun", response_model=SubmitResponse, responses=RERUN_ERRORS)
async def rerun_job(request: Request, job_id: str, key_id: str = Depends(require_key)) -> SubmitResponse:
    """The job made again from its recorded request, as a new job; once Ready, its `rerun` says whether its
    images equal the original's byte for byte, else the largest pixel difference."""
    record = await own_job(request, job_id, key_id)
    try:
        rerun = await services(request).service.rerun(record, str(request.base_url))
    except RerunRefused as refused:
        raise HTTPException(refused.status_code, refused.message) from None
    except (LimitExceeded, OverLimit) as over:
        raise over_limit(over) from None
    return submit_response(request, rerun)
