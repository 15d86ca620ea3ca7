"""Service-level routes: liveness, echo, the served models, a key's usage."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from serve_apps.api.protocol import ModelInfo
from serve_apps.api.routers.deps import BODY_ERRORS, ERRORS, require_key, services
from serve_apps.api.views import model_info

router = APIRouter()


@router.get("/ping", response_class=PlainTextResponse, tags=["meta"])
async def ping() -> str:
    return "it works"


@router.post("/v1/echo", tags=["meta"], responses={**ERRORS, **BODY_ERRORS})
async def echo(request: Request, _key: str = Depends(require_key)) -> JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        body = (await request.body()).decode(errors="replace")
    return JSONResponse({"echo": body})


@router.get("/v1/models", response_model=list[ModelInfo], tags=["models"], responses=ERRORS)
async def list_models(request: Request, _key: str = Depends(require_key)) -> list[ModelInfo]:
    """The models; what backs each, and for admin keys where its weights are kept."""
    admin = await asyncio.to_thread(services(request).keys.is_admin, request.headers)
    return [model_info(model, admin) for model in services(request).describe_models()]


@router.get("/v1/usage", tags=["jobs"], responses=ERRORS)
async def usage(request: Request, key_id: str = Depends(require_key)) -> dict:
    """GPU-seconds and cost of this key's jobs, per model, at the configured GPU price."""
    return await services(request).service.usage(key_id)
