"""`POST /v1/uploads`: store an image once, use its id as input_image (or mask) in later requests.

Uploads are private to the key that made them: another key gets 422 "no upload" for the id.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Request, UploadFile
from pydantic import BaseModel

from serve_apps.api.routers.deps import BODY_ERRORS, ERRORS, require_key, services, unprocessable
from serve_apps.jobs.inputs import InputRejected

router = APIRouter(tags=["images in"], responses=ERRORS)


class UploadResponse(BaseModel):
    id: str
    width: int
    height: int
    sha256: str


@router.post("/v1/uploads", response_model=UploadResponse, responses=BODY_ERRORS)
async def upload(
    request: Request,
    file: UploadFile = File(description="a PNG, JPEG or WebP image"),
    key_id: str = Depends(require_key),
) -> UploadResponse:
    """The image is checked and normalised as any input is (EXIF rotation, alpha on white); the id
    it gets works in place of base64 or a URL in `input_image` .. `input_image_N` and `mask`."""
    resolver = services(request).service.inputs
    data = await file.read(resolver.limits.max_bytes + 1)
    try:
        stored = await resolver.upload(key_id, data)
    except InputRejected as rejected:
        raise unprocessable(rejected.field, rejected.message) from None
    return UploadResponse(id=stored.id, width=stored.width, height=stored.height, sha256=stored.sha256)
