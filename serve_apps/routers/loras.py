"""LoRA adapters: list the registered ones, register a new one."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from lora.registry import AdapterError
from serve_apps.protocol import LoraInfo, LoraRegistration
from serve_apps.routers.deps import ERRORS, require_key, services, unprocessable

router = APIRouter(tags=["loras"], responses=ERRORS)


@router.get("/v1/loras", response_model=list[LoraInfo])
async def list_loras(request: Request, _key: str = Depends(require_key)) -> list[LoraInfo]:
    return [LoraInfo(**record) for record in await asyncio.to_thread(services(request).service.db.list_loras)]


@router.post("/v1/loras", response_model=LoraInfo)
async def register_lora(request: Request, body: LoraRegistration, key_id: str = Depends(require_key)) -> LoraInfo:
    """Registered adapters are usable by every key and changed only by the key that registered them."""
    adapters = services(request).adapters
    try:
        record = await asyncio.to_thread(
            adapters.register, body.id, body.source, body.trigger_word, body.license, body.tags, key_id
        )
    except AdapterError as error:
        raise unprocessable("source", str(error)) from None
    return LoraInfo(**record)
