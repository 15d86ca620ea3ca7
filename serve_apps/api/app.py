"""The FastAPI application: the routers, their error handlers, and the sweeper run by the lifespan."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from serve_apps.api.body_limit import BodySizeLimit
from serve_apps.api.routers import admin, events, finetune, generation, images, jobs, loras, openai, page, uploads
from serve_apps.api.routers.deps import AppServices, check_key

ROUTERS = (
    page.router,
    admin.router,
    loras.router,
    jobs.router,
    events.router,
    images.router,
    uploads.router,
    openai.router,
    finetune.router,  # before generation: /v1/{model}-finetuned would match /v1/{model}
    generation.router,
)


logger = logging.getLogger("flux_serve.app")


def create_app(services: AppServices) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        services.service.start_sweeper()
        yield
        handed_over = await services.service.core.hand_over()  # a stop: the next sweep anywhere adopts them
        if handed_over:
            logger.info("stopping: %d running job(s) handed over for adoption", handed_over)

    app = FastAPIOffline(  # /docs and /redoc from assets in the package: they work offline
        title="flux-serve",
        version="1",
        description="Self-hosted FLUX.2 [klein] image generation. Send your key as `x-key` or `Authorization: Bearer`.",
        lifespan=lifespan,
        exception_handlers=openai.EXCEPTION_HANDLERS,
        swagger_ui_parameters={"validatorUrl": None},  # Swagger UI would send the spec to validator.swagger.io
    )
    app.state.services = services
    app.add_middleware(
        BodySizeLimit,
        max_body_bytes=services.service.args.limits.max_body_bytes,
        check_key=lambda headers: check_key(headers, services.keys),
    )
    for router in ROUTERS:
        app.include_router(router)
    return app
