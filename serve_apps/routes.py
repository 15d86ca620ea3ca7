"""The HTTP routes: thin, they validate, authenticate and hand over to JobService."""

from __future__ import annotations

import asyncio
import base64
import time

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.images import MEDIA_TYPES
from deployments.registry import VARIANTS
from serve_apps.auth import ApiKeys, key_from_headers
from serve_apps.jobs import JobService, LimitExceeded
from serve_apps.protocol import (
    ErrorResponse,
    GenerateRequest,
    GetResultResponse,
    JobListResponse,
    JobResponse,
    JobStatus,
    LoraInfo,
    LoraRegistration,
    ModelInfo,
    OpenAIImage,
    OpenAIImageRequest,
    OpenAIImagesResponse,
    SubmitResponse,
)
from lora.registry import AdapterError, AdapterRegistry
from serve_apps.signing import UrlSigner
from serve_apps.views import JobViews

BAD_REQUEST = 400
UNAUTHORIZED = 401
FORBIDDEN = 403
NOT_FOUND = 404
UNPROCESSABLE = 422
TOO_MANY_REQUESTS = 429
BAD_GATEWAY = 502
MAX_IDEMPOTENCY_KEY_CHARS = 255
OPENAI_PATH = "/v1/images/generations"

ERRORS = {
    UNAUTHORIZED: {"model": ErrorResponse, "description": "missing or invalid API key"},
    NOT_FOUND: {"model": ErrorResponse},
    TOO_MANY_REQUESTS: {"model": ErrorResponse, "description": "over a per-key limit; see Retry-After"},
}


def create_app(
    service: JobService, keys: ApiKeys, signer: UrlSigner, views: JobViews, describe_models, adapters: AdapterRegistry
) -> FastAPI:
    """`describe_models()` returns the list of ModelInfo for /v1/models."""
    app = FastAPI(
        title="flux-serve",
        version="1",
        description="Self-hosted FLUX.2 [klein] image generation. Send your key as `x-key` or `Authorization: Bearer`.",
    )

    @app.on_event("startup")
    async def _start_sweeper() -> None:
        service.start_sweeper()

    def openai_error(message: str, status_code: int, headers: dict | None = None) -> JSONResponse:
        """OpenAI's error shape, so the `openai` client shows the message in its exception."""
        body = {"error": {"message": message, "type": "invalid_request_error", "code": status_code}}
        return JSONResponse(body, status_code=status_code, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException):
        if request.url.path == OPENAI_PATH:
            return openai_error(str(error.detail), error.status_code, error.headers)
        return await http_exception_handler(request, error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError):
        if request.url.path == OPENAI_PATH:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in error.errors())
            return openai_error(problems, 422)
        return await request_validation_exception_handler(request, error)

    async def require_key(request: Request) -> str:
        key_id = keys.identify(key_from_headers(request.headers))
        if key_id is None:
            if not keys.key_hashes:
                message = "No API keys are configured on this server; set FLUX_API_KEYS or keys_file and restart."
            else:
                message = "Missing or invalid API key: send it as the `x-key` header or `Authorization: Bearer <key>`."
            raise HTTPException(UNAUTHORIZED, message)
        return key_id

    async def own_job(job_id: str, key_id: str) -> dict:
        record = await service.load(job_id, key_id)
        if record is None:
            raise HTTPException(NOT_FOUND, f"No job {job_id!r} for this key: check the id returned by the submit.")
        return await service.adopt_if_stale(record)

    def served_model(model: str) -> str:
        if model not in service.denoisers:
            served = ", ".join(sorted(service.denoisers))
            hint = " (known but not deployed here)" if model in VARIANTS else ""
            raise HTTPException(NOT_FOUND, f"Unknown model {model!r}{hint}. This server serves: {served}.")
        return model

    async def submit_job(request: Request, model: str, body: GenerateRequest, key_id: str, idempotency_key: str | None) -> dict:
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
            raise HTTPException(BAD_REQUEST, f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY_CHARS} characters.")
        try:
            return await service.submit(model, body, key_id, str(request.base_url), idempotency_key)
        except AdapterError as error:
            raise HTTPException(UNPROCESSABLE, [{"loc": ["body", "loras"], "msg": str(error), "type": "value_error"}]) from None
        except LimitExceeded as over:
            raise HTTPException(
                TOO_MANY_REQUESTS, f"Too many requests: {over}.", headers={"Retry-After": str(over.retry_after_s)}
            ) from None

    @app.get("/ping", response_class=PlainTextResponse, tags=["meta"])
    async def ping() -> str:
        return "it works"

    @app.post("/v1/echo", tags=["meta"], responses=ERRORS)
    async def echo(request: Request, _key: str = Depends(require_key)) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = (await request.body()).decode(errors="replace")
        return JSONResponse({"echo": body})

    @app.get("/v1/models", response_model=list[ModelInfo], tags=["models"], responses=ERRORS)
    async def list_models(_key: str = Depends(require_key)) -> list[ModelInfo]:
        return describe_models()

    @app.get("/v1/loras", response_model=list[LoraInfo], tags=["loras"], responses=ERRORS)
    async def list_loras(_key: str = Depends(require_key)) -> list[LoraInfo]:
        return [LoraInfo(**record) for record in await asyncio.to_thread(service.store.list_loras)]

    @app.post("/v1/loras", response_model=LoraInfo, tags=["loras"], responses=ERRORS)
    async def register_lora(body: LoraRegistration, _key: str = Depends(require_key)) -> LoraInfo:
        try:
            record = await asyncio.to_thread(
                adapters.register, body.id, body.source, body.trigger_word, body.license, body.tags
            )
        except AdapterError as error:
            raise HTTPException(UNPROCESSABLE, [{"loc": ["body", "source"], "msg": str(error), "type": "value_error"}]) from None
        return LoraInfo(**record)

    @app.get("/v1/get_result", response_model=GetResultResponse, response_model_exclude_none=True, tags=["jobs"], responses=ERRORS)
    async def get_result(id: str, key_id: str = Depends(require_key)) -> GetResultResponse:
        record = await service.load(id, key_id)
        if record is None:
            return GetResultResponse(id=id, status=JobStatus.NOT_FOUND)
        record = await service.adopt_if_stale(record)
        return views.bfl_result(record, await service.load_progress(id))

    @app.get("/v1/usage", tags=["jobs"], responses=ERRORS)
    async def usage(key_id: str = Depends(require_key)) -> dict:
        """GPU-seconds and cost of this key's jobs, per model, at the configured GPU price."""
        return await service.usage(key_id)

    @app.get("/v1/jobs", response_model=JobListResponse, tags=["jobs"], responses=ERRORS)
    async def list_jobs(
        limit: int = Query(20, ge=1, le=100),
        cursor: str | None = Query(None, max_length=64, pattern=r"^[0-9]{16}_[0-9a-f]{32}$"),
        key_id: str = Depends(require_key),
    ) -> JobListResponse:
        job_ids, next_cursor = await service.history(key_id, limit, cursor)
        records = [record for record in [await service.load(job_id, key_id) for job_id in job_ids] if record]
        return JobListResponse(jobs=[views.job(record) for record in records], next_cursor=next_cursor)

    @app.get("/v1/jobs/{job_id}", response_model=JobResponse, tags=["jobs"], responses=ERRORS)
    async def get_job(job_id: str, key_id: str = Depends(require_key)) -> JobResponse:
        record = await own_job(job_id, key_id)
        return views.job(record, await service.load_progress(job_id), await service.queue_position(record))

    @app.post("/v1/jobs/{job_id}/cancel", response_model=JobResponse, tags=["jobs"], responses=ERRORS)
    async def cancel_job(job_id: str, key_id: str = Depends(require_key)) -> JobResponse:
        record = await service.cancel(await own_job(job_id, key_id))
        return views.job(record, await service.load_progress(job_id))

    @app.get(
        "/v1/images/{job_id}/{name}",
        tags=["jobs"],
        responses={NOT_FOUND: {"model": ErrorResponse}, FORBIDDEN: {"model": ErrorResponse}},
    )
    async def get_image(job_id: str, name: str, exp: int | None = Query(None, ge=0, le=2**62), sig: str | None = Query(None, max_length=128)) -> Response:
        refusal = signer.check(f"/v1/images/{job_id}/{name}", exp, sig)
        if refusal:
            raise HTTPException(FORBIDDEN, refusal)
        data = await service.load_image(job_id, name)
        if data is None:
            raise HTTPException(NOT_FOUND, f"No image {name!r} for job {job_id!r}.")
        return Response(data, media_type=MEDIA_TYPES[name.rsplit(".", 1)[1]])

    @app.post("/v1/images/generations", response_model=OpenAIImagesResponse, tags=["openai"], responses={**ERRORS, BAD_GATEWAY: {"model": ErrorResponse}})
    async def openai_generate(request: Request, body: OpenAIImageRequest, key_id: str = Depends(require_key)) -> OpenAIImagesResponse:
        model = served_model(body.model) if body.model else sorted(service.denoisers)[0]
        record = await submit_job(request, model, body.to_generate_request(), key_id, None)
        record = await service.wait(record["id"], key_id)
        if record["status"] == JobStatus.REQUEST_MODERATED.value:
            raise HTTPException(BAD_REQUEST, f"Request moderated: {record['error']}.")
        if record["status"] != JobStatus.READY.value:
            raise HTTPException(BAD_GATEWAY, f"Generation failed: {record['error']}.")
        if body.response_format == "url":
            data = [OpenAIImage(url=url, revised_prompt=body.prompt) for url in views.image_urls(record)]
        else:
            images = [await service.load_image(record["id"], name) for name in record["images"]]
            data = [OpenAIImage(b64_json=base64.b64encode(image).decode(), revised_prompt=body.prompt) for image in images]
        return OpenAIImagesResponse(created=int(time.time()), data=data)

    @app.post("/v1/{model}", response_model=SubmitResponse, tags=["generate"], responses=ERRORS)
    async def submit(
        request: Request,
        model: str,
        body: GenerateRequest,
        key_id: str = Depends(require_key),
        idempotency_key: str | None = Header(None),
    ) -> SubmitResponse:
        record = await submit_job(request, served_model(model), body, key_id, idempotency_key)
        base = str(request.base_url).rstrip("/")
        return SubmitResponse(id=record["id"], polling_url=f"{base}/v1/get_result?id={record['id']}")

    return app
