"""Result images and the input images of jobs behind signed, expiring URLs (no key needed: the
signature is the permission)."""

from __future__ import annotations

from collections.abc import Awaitable
from http import HTTPStatus

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from deployments.contracts import MEDIA_TYPES
from serve_apps.api.protocol import ErrorResponse
from serve_apps.api.routers.deps import services

router = APIRouter(tags=["jobs"])
SIGNED_FILE_ERRORS = {
    HTTPStatus.NOT_FOUND.value: {"model": ErrorResponse},
    HTTPStatus.FORBIDDEN.value: {"model": ErrorResponse},
}
EXPIRES = Query(None, ge=0, le=2**62)
SIGNATURE = Query(None, max_length=128)


async def signed_file(
    request: Request, path: str, exp: int | None, sig: str | None, data: Awaitable[bytes | None], missing: str
) -> Response:
    """The file behind the signed URL `path`: 403 when the signature is wrong or expired, 404 when it is gone."""
    refusal = services(request).signer.check(path, exp, sig)
    if refusal:
        data.close()
        raise HTTPException(HTTPStatus.FORBIDDEN, refusal)
    found = await data
    if found is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, missing)
    return Response(found, media_type=MEDIA_TYPES.get(path.rsplit(".", 1)[-1], "image/png"))


@router.get("/v1/images/{job_id}/{name}", responses=SIGNED_FILE_ERRORS)
async def get_image(request: Request, job_id: str, name: str, exp: int | None = EXPIRES, sig: str | None = SIGNATURE):
    """A result image, from the URLs in /v1/jobs/{id} and get_result."""
    data = services(request).service.load_image(job_id, name)
    path = f"/v1/images/{job_id}/{name}"
    return await signed_file(request, path, exp, sig, data, f"No image {name!r} for job {job_id!r}.")


@router.get("/v1/references/{name}", responses=SIGNED_FILE_ERRORS)
async def get_reference(request: Request, name: str, exp: int | None = EXPIRES, sig: str | None = SIGNATURE):
    """An input image of a job as stored (what the model was given), from the URL in /v1/jobs/{id}."""
    data = services(request).service.load_reference(name)
    return await signed_file(request, f"/v1/references/{name}", exp, sig, data, f"No input image {name!r}.")
