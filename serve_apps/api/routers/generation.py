"""BFL's submit route, `POST /v1/{model}`. Included last: its path matches any /v1/<name>."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request

from serve_apps.api.protocol import GenerateRequest, SubmitResponse
from serve_apps.api.routers.deps import ERRORS, SUBMIT_ERRORS, require_key, served_model, services, submit_job
from serve_apps.jobs.pricing import megapixels

router = APIRouter(tags=["generate"], responses=ERRORS)


@router.post("/v1/{model}", response_model=SubmitResponse, responses=SUBMIT_ERRORS)
async def submit(
    request: Request,
    model: str,
    body: GenerateRequest,
    key_id: str = Depends(require_key),
    idempotency_key: str | None = Header(None),
) -> SubmitResponse:
    record = await submit_job(request, served_model(request, model), body, key_id, idempotency_key)
    return submit_response(request, record)


def submit_response(request: Request, record) -> SubmitResponse:
    """The id, polling URL and price of a job just submitted (or replayed)."""
    base = str(request.base_url).rstrip("/")
    input_mp, output_mp = megapixels(record.params)
    return SubmitResponse(
        id=record.id,
        polling_url=f"{base}/v1/get_result?id={record.id}",
        cost=services(request).service.quote(record),
        input_mp=input_mp,
        output_mp=output_mp,
        eta_s=record.submit_eta_s,
    )
