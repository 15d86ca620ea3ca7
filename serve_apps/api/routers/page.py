"""The web studio: one page and its two assets, shipped in the package (no CDN, nothing leaves the service)."""

from __future__ import annotations

from http import HTTPStatus
from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

STATIC = files("serve_apps") / "static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}


@router.get("/")
async def studio() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/studio/{name}")
async def studio_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(
            HTTPStatus.NOT_FOUND, f"No studio file {name!r}; the page uses {', '.join(sorted(ASSETS))}."
        )
    return FileResponse(str(STATIC / name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})
