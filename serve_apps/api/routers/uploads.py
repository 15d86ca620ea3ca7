"""`POST /v1/uploads`: store an image once, use its id as input_image (or mask) in later requests.

Uploads are private to the key that made them: another key gets 422 "no upload" for the id. Each key
may upload limits.uploads_per_minute_per_key a minute and keep limits.uploads_per_key uploads of at most
limits.upload_bytes_per_key in all (429 with Retry-After over either); retention deletes an upload
jobs.retention_days after it was made.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Request, UploadFile
from pydantic import BaseModel

from serve_apps.api.routers.deps import ERRORS, SUBMIT_ERRORS, over_limit, require_key, services, unprocessable
from serve_apps.jobs.inputs import InputRejected
from serve_apps.security.limits import OverLimit

router = APIRouter(tags=["images in"], responses=ERRORS)


class UploadResponse(BaseModel):
    id: str
    width: int
    height: int
    sha256: str


@router.post("/v1/uploads", response_model=UploadResponse, responses=SUBMIT_ERRORS)
async def upload(
    request: Request,
    file: UploadFile = File(description="a PNG, JPEG or WebP image"),
    key_id: str = Depends(require_key),
) -> UploadResponse:
    """The image is checked and normalised as any input is (EXIF rotation, alpha on white); the id
    it gets works in place of base64 or a URL in `input_image` .. `input_image_N` and `mask`.
    Over the key's uploads a minute or the uploads it may keep stored: 429 with Retry-After."""
    service = services(request).service
    data = await file.read(service.inputs.limits.max_bytes + 1)
    try:
        stored = await service.inputs.upload(key_id, data, service.submitter.limiter)
    except InputRejected as rejected:
        raise unprocessable(rejected.field, rejected.message) from None
    except OverLimit as over:
        raise over_limit(over) from None
    return UploadResponse(id=stored.id, width=stored.width, height=stored.height, sha256=stored.sha256)
