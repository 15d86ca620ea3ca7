"""OpenAI-compatible image routes, so the `openai` client works unchanged (errors in its shape)."""

from __future__ import annotations

import base64
import time
from http import HTTPStatus

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_apps.api.deadline_refusal import deadline_unmet
from serve_apps.api.openai_protocol import (
    OpenAIEditRequest,
    OpenAIErrorResponse,
    OpenAIImage,
    OpenAIImageRequest,
    OpenAIImagesResponse,
    openai_field,
)
from serve_apps.api.protocol import GenerateRequest, JobStatus
from serve_apps.api.routers.deps import require_key, services, submit_job, unprocessable
from serve_apps.api.routers.finetune import model_and_finetune
from serve_apps.jobs.deadlines import DeadlineUnmet

OPENAI_PATHS = ("/v1/images/generations", "/v1/images/edits")
EDIT_FILES = ("image", "image[]", "mask")

router = APIRouter(tags=["openai"])


def openai_error(message: str, status_code: int, headers: dict | None = None, param: str | None = None) -> JSONResponse:
    """OpenAI's error shape, so the `openai` client shows the message in its exception."""
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": status_code}}
    return JSONResponse(body, status_code=status_code, headers=headers)


async def http_error(request: Request, error: StarletteHTTPException):
    if request.url.path in OPENAI_PATHS:
        if isinstance(error.detail, list):  # unprocessable(): [{loc, msg}], named as the openai client names it
            fields = [openai_field(str(problem["loc"][-1])) for problem in error.detail]
            message = "; ".join(f"{field}: {problem['msg']}" for field, problem in zip(fields, error.detail))
            return openai_error(message, error.status_code, error.headers, param=fields[0])
        return openai_error(str(error.detail), error.status_code, error.headers)
    return await http_exception_handler(request, error)


async def validation_error(request: Request, error: RequestValidationError):
    if request.url.path in OPENAI_PATHS:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in error.errors())
        return openai_error(problems, HTTPStatus.UNPROCESSABLE_ENTITY)
    return await request_validation_exception_handler(request, error)


EXCEPTION_HANDLERS = {
    StarletteHTTPException: http_error,
    RequestValidationError: validation_error,
    DeadlineUnmet: deadline_unmet,  # a deadline_s the ETA is over: 429 with what would fit
}
OPENAI_ERRORS = {
    status.value: {"model": OpenAIErrorResponse, "description": status.phrase}
    for status in (
        HTTPStatus.BAD_REQUEST,
        HTTPStatus.UNAUTHORIZED,
        HTTPStatus.NOT_FOUND,
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        HTTPStatus.UNPROCESSABLE_ENTITY,
        HTTPStatus.TOO_MANY_REQUESTS,
        HTTPStatus.BAD_GATEWAY,
        HTTPStatus.SERVICE_UNAVAILABLE,
    )
}


@router.post(
    "/v1/images/generations",
    response_model=OpenAIImagesResponse,
    responses=OPENAI_ERRORS,
)
async def openai_generate(
    request: Request, body: OpenAIImageRequest, key_id: str = Depends(require_key)
) -> OpenAIImagesResponse:
    return await run_to_end(request, body, body.to_generate_request(), key_id)


@router.post(
    "/v1/images/edits",
    response_model=OpenAIImagesResponse,
    responses=OPENAI_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image", "prompt"],
                        "properties": {
                            "image": {"type": "string", "format": "binary", "description": "or several as image[]"},
                            "mask": {"type": "string", "format": "binary", "description": "transparent = repaint"},
                            **{
                                name: {"type": "string"}
                                for name in ("prompt", "model", "n", "size", "response_format", "output_format")
                            },
                        },
                    }
                }
            },
        }
    },
)
async def openai_edit(request: Request, key_id: str = Depends(require_key)) -> OpenAIImagesResponse:
    """Edit one image, or make one from several (`image[]`), as the `openai` client's `images.edit`
    sends it; a `mask` repaints only its transparent (or white) part of the first image."""
    form = await request.form()
    images = [
        await part.read()
        for name in ("image", "image[]")
        for part in form.getlist(name)
        if isinstance(part, UploadFile)
    ]
    mask = form.get("mask")
    fields = {name: value for name, value in form.multi_items() if name not in EDIT_FILES and isinstance(value, str)}
    try:
        body = OpenAIEditRequest.model_validate(fields)
        generate = body.to_generate_request(images, await mask.read() if isinstance(mask, UploadFile) else None)
    except ValidationError as error:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors()]) from None
    except ValueError as error:
        raise unprocessable("image", str(error)) from None
    return await run_to_end(request, body, generate, key_id)


async def run_to_end(
    request: Request, body: OpenAIImageRequest, generate: GenerateRequest, key_id: str
) -> OpenAIImagesResponse:
    """OpenAI's routes answer with the images: submit, wait for the job, return its URLs or base64."""
    service, views = services(request).service, services(request).views
    model, generate = await model_and_finetune(request, body.model or service.served_models[0], generate, key_id)
    record = await submit_job(request, model, generate, key_id, None)
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
