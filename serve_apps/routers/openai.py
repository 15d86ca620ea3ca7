"""OpenAI-compatible image routes, so the `openai` client works unchanged (errors in its shape)."""

from __future__ import annotations

import base64
import time
from http import HTTPStatus

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_apps.protocol import ErrorResponse, JobStatus, OpenAIImage, OpenAIImageRequest, OpenAIImagesResponse
from serve_apps.routers.deps import ERRORS, require_key, served_model, services, submit_job

OPENAI_PATHS = ("/v1/images/generations",)

router = APIRouter(tags=["openai"])


def openai_error(message: str, status_code: int, headers: dict | None = None) -> JSONResponse:
    """OpenAI's error shape, so the `openai` client shows the message in its exception."""
    body = {"error": {"message": message, "type": "invalid_request_error", "code": status_code}}
    return JSONResponse(body, status_code=status_code, headers=headers)


async def http_error(request: Request, error: StarletteHTTPException):
    if request.url.path in OPENAI_PATHS:
        return openai_error(str(error.detail), error.status_code, error.headers)
    return await http_exception_handler(request, error)


async def validation_error(request: Request, error: RequestValidationError):
    if request.url.path in OPENAI_PATHS:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in error.errors())
        return openai_error(problems, HTTPStatus.UNPROCESSABLE_ENTITY)
    return await request_validation_exception_handler(request, error)


EXCEPTION_HANDLERS = {StarletteHTTPException: http_error, RequestValidationError: validation_error}


@router.post(
    "/v1/images/generations",
    response_model=OpenAIImagesResponse,
    responses={**ERRORS, HTTPStatus.BAD_GATEWAY.value: {"model": ErrorResponse}},
)
async def openai_generate(
    request: Request, body: OpenAIImageRequest, key_id: str = Depends(require_key)
) -> OpenAIImagesResponse:
    service, views = services(request).service, services(request).views
    model = served_model(request, body.model) if body.model else sorted(service.denoisers)[0]
    record = await submit_job(request, model, body.to_generate_request(), key_id, None)
    record = await service.wait(record.id, key_id)
    if record.status == JobStatus.REQUEST_MODERATED:
        raise HTTPException(HTTPStatus.BAD_REQUEST, f"Request moderated: {record.error}.")
    if record.status != JobStatus.READY:
        raise HTTPException(HTTPStatus.BAD_GATEWAY, f"Generation failed: {record.error}.")
    if body.response_format == "url":
        data = [OpenAIImage(url=url, revised_prompt=body.prompt) for url in views.image_urls(record)]
    else:
        images = [await service.load_image(record.id, name) for name in record.images]
        data = [OpenAIImage(b64_json=base64.b64encode(image).decode(), revised_prompt=body.prompt) for image in images]
    return OpenAIImagesResponse(created=int(time.time()), data=data)
