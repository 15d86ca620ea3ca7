"""The HTTP routes: thin, they validate, authenticate and hand over to JobService."""

from __future__ import annotations

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from deployments.images import MEDIA_TYPES
from deployments.registry import VARIANTS
from serve_apps.auth import ApiKeys, key_from_headers
from serve_apps.jobs import JobService
from serve_apps.protocol import (
    ErrorResponse,
    GenerateRequest,
    GetResultResponse,
    JobResponse,
    JobStatus,
    ModelInfo,
    Progress,
    ResultPayload,
    SubmitResponse,
)

UNAUTHORIZED = 401
NOT_FOUND = 404


def create_app(service: JobService, keys: ApiKeys, describe_models) -> FastAPI:
    """`describe_models()` returns the list of ModelInfo for /v1/models."""
    app = FastAPI(
        title="flux-serve",
        version="1",
        description="Self-hosted FLUX.2 [klein] image generation. Send your key as `x-key` or `Authorization: Bearer`.",
    )

    @app.on_event("startup")
    async def _start_sweeper() -> None:
        service.start_sweeper()

    async def require_key(request: Request) -> str:
        key_id = keys.identify(key_from_headers(request.headers))
        if key_id is None:
            if not keys.key_hashes:
                message = "No API keys are configured on this server; set FLUX_API_KEYS or keys_file and restart."
            else:
                message = "Missing or invalid API key: send it as the `x-key` header or `Authorization: Bearer <key>`."
            raise HTTPException(UNAUTHORIZED, message)
        return key_id

    def image_urls(request: Request, record: dict) -> list[str]:
        base = str(request.base_url).rstrip("/")
        return [f"{base}/v1/images/{record['id']}/{name}" for name in record["images"]]

    @app.get("/ping", response_class=PlainTextResponse, tags=["meta"])
    async def ping() -> str:
        return "it works"

    @app.post("/v1/echo", tags=["meta"])
    async def echo(request: Request, _key: str = Depends(require_key)) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = (await request.body()).decode(errors="replace")
        return JSONResponse({"echo": body})

    @app.get("/v1/models", response_model=list[ModelInfo], tags=["models"])
    async def list_models(_key: str = Depends(require_key)) -> list[ModelInfo]:
        return describe_models()

    @app.get(
        "/v1/get_result",
        response_model=GetResultResponse,
        response_model_exclude_none=True,
        tags=["jobs"],
    )
    async def get_result(request: Request, id: str, _key: str = Depends(require_key)) -> GetResultResponse:
        record = await service.load(id)
        if record is None:
            return GetResultResponse(id=id, status=JobStatus.NOT_FOUND)
        record = await service.adopt_if_stale(record)
        status = JobStatus(record["status"])
        if status == JobStatus.READY:
            urls = image_urls(request, record)
            params = record["request"]
            result = ResultPayload(
                sample=urls[0],
                samples=urls,
                seed=record["seed"],
                prompt=params["prompt"],
                width=params["width"],
                height=params["height"],
                output_format=params["output_format"],
            )
            return GetResultResponse(id=id, status=status, result=result, progress=1.0)
        if status == JobStatus.ERROR:
            return GetResultResponse(id=id, status=status, details={"error": record["error"]})
        progress = await service.load_progress(id)
        fraction = progress["step"] / progress["total"] if progress else 0.0
        return GetResultResponse(id=id, status=status, progress=fraction, details={"stage": record["stage"]})

    @app.get(
        "/v1/jobs/{job_id}",
        response_model=JobResponse,
        responses={NOT_FOUND: {"model": ErrorResponse}},
        tags=["jobs"],
    )
    async def get_job(request: Request, job_id: str, _key: str = Depends(require_key)) -> JobResponse:
        record = await service.load(job_id)
        if record is None:
            raise HTTPException(NOT_FOUND, f"No job {job_id!r}: check the id returned by POST /v1/<model>.")
        record = await service.adopt_if_stale(record)
        progress = await service.load_progress(job_id)
        return JobResponse(
            **{k: record[k] for k in ("id", "model", "status", "stage", "seed", "timings_s", "batch", "attempts", "error", "created_at", "updated_at", "request")},
            progress=Progress(step=progress["step"], total=progress["total"]) if progress else None,
            images=image_urls(request, record),
        )

    @app.get("/v1/images/{job_id}/{name}", tags=["jobs"], responses={NOT_FOUND: {"model": ErrorResponse}})
    async def get_image(job_id: str, name: str) -> Response:
        data = await service.load_image(job_id, name)
        if data is None:
            raise HTTPException(NOT_FOUND, f"No image {name!r} for job {job_id!r}.")
        return Response(data, media_type=MEDIA_TYPES[name.rsplit(".", 1)[1]])

    @app.post(
        "/v1/{model}",
        response_model=SubmitResponse,
        responses={NOT_FOUND: {"model": ErrorResponse}, UNAUTHORIZED: {"model": ErrorResponse}},
        tags=["generate"],
    )
    async def submit(
        request: Request, model: str, body: GenerateRequest, key_id: str = Depends(require_key)
    ) -> SubmitResponse:
        if model not in service.denoisers:
            served = ", ".join(sorted(service.denoisers))
            hint = " (known but not deployed here)" if model in VARIANTS else ""
            raise HTTPException(NOT_FOUND, f"Unknown model {model!r}{hint}. This server serves: {served}.")
        record = await service.submit(model, body, key_id)
        base = str(request.base_url).rstrip("/")
        return SubmitResponse(id=record["id"], polling_url=f"{base}/v1/get_result?id={record['id']}")

    return app
