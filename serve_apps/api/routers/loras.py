"""LoRA adapters: list the registered ones, register a new one."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from lora.registry import AdapterError
from serve_apps.api.protocol import LoraInfo, LoraRegistration
from serve_apps.api.routers.deps import BODY_ERRORS, ERRORS, require_key, services, unprocessable
from serve_apps.api.views import lora_info

router = APIRouter(tags=["loras"], responses=ERRORS)


@router.get("/v1/loras", response_model=list[LoraInfo])
async def list_loras(request: Request, key_id: str = Depends(require_key)) -> list[LoraInfo]:
    """Every registered adapter; where its file is kept, for admin keys only."""
    records = await asyncio.to_thread(services(request).adapters.registered, key_id)
    admin = await asyncio.to_thread(services(request).keys.is_admin, request.headers)
    return [lora_info(record, key_id, admin) for record in records]


@router.post("/v1/loras", response_model=LoraInfo, responses=BODY_ERRORS)
async def register_lora(request: Request, body: LoraRegistration, key_id: str = Depends(require_key)) -> LoraInfo:
    """Registered adapters are usable by every key and changed only by the key that registered them
    (or an admin key)."""
    adapters = services(request).adapters
    admin = await asyncio.to_thread(services(request).keys.is_admin, request.headers)
    try:
        record = await asyncio.to_thread(
            adapters.register, body.id, body.source, body.trigger_word, body.license, body.tags, key_id, admin
        )
    except AdapterError as error:
        raise unprocessable("source", str(error)) from None
    return lora_info(record, key_id, admin)
