"""The answer to a submit whose ETA is over its deadline_s: 429 at once, saying the ETA and what would fit."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import Request
from fastapi.responses import JSONResponse

from serve_apps.jobs.deadlines import DeadlineUnmet


async def deadline_unmet(_request: Request, unmet: DeadlineUnmet) -> JSONResponse:
    """FastAPI's error shape (`detail`, the message every front end shows), plus the figures for programs: `eta_s`,
    `deadline_s`, and `fits` (steps, num_images, width/height that would meet it, each changed alone)."""
    body = {
        "detail": unmet.message(),
        "eta_s": round(unmet.eta_s, 1),
        "deadline_s": unmet.deadline_s,
        "fits": unmet.suggestions(),
    }
    headers = {"Retry-After": str(unmet.retry_after_s())}
    return JSONResponse(body, status_code=HTTPStatus.TOO_MANY_REQUESTS, headers=headers)
