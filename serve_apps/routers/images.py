"""Result images and the input images of jobs behind signed, expiring URLs (no key needed: the
signature is the permission)."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from deployments.contracts import MEDIA_TYPES
from serve_apps.protocol import ErrorResponse
from serve_apps.routers.deps import services

router = APIRouter(tags=["jobs"])


@router.get(
    "/v1/images/{job_id}/{name}",
    responses={
        HTTPStatus.NOT_FOUND.value: {"model": ErrorResponse},
        HTTPStatus.FORBIDDEN.value: {"model": ErrorResponse},
    },
)
async def get_image(
    request: Request,
    job_id: str,
    name: str,
    exp: int | None = Query(None, ge=0, le=2**62),
    sig: str | None = Query(None, max_length=128),
) -> Response:
    refusal = services(request).signer.check(f"/v1/images/{job_id}/{name}", exp, sig)
    if refusal:
        raise HTTPException(HTTPStatus.FORBIDDEN, refusal)
    data = await services(request).service.load_image(job_id, name)
    if data is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, f"No image {name!r} for job {job_id!r}.")
    return Response(data, media_type=MEDIA_TYPES[name.rsplit(".", 1)[1]])


@router.get(
    "/v1/references/{name}",
    responses={
        HTTPStatus.NOT_FOUND.value: {"model": ErrorResponse},
        HTTPStatus.FORBIDDEN.value: {"model": ErrorResponse},
    },
)
async def get_reference(
    request: Request,
    name: str,
    exp: int | None = Query(None, ge=0, le=2**62),
    sig: str | None = Query(None, max_length=128),
) -> Response:
    """An input image of a job as stored (what the model was given), from the URL in /v1/jobs/{id}."""
    refusal = services(request).signer.check(f"/v1/references/{name}", exp, sig)
    if refusal:
        raise HTTPException(HTTPStatus.FORBIDDEN, refusal)
    data = await asyncio.to_thread(services(request).service.store.load_reference, name)
    if data is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, f"No input image {name!r}.")
    return Response(data, media_type="image/png")
