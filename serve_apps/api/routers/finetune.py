"""Fine-tuning, BFL's finetune API: `POST /v1/finetune` (JSON with a base64 ZIP, or a multipart form with
`files`), `finetune_details`, `my_finetunes`, `delete_finetune`, the samples, and generation with a finetune
at `POST /v1/{model}-finetuned`. Included before the generation router, whose `/v1/{model}` would match."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from http import HTTPStatus

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from serve_apps.api.finetune_protocol import (
    DeleteFinetune,
    FinetuneDetails,
    FinetunedGenerateRequest,
    FinetuneRequest,
    FinetuneSettings,
    FinetuneSubmitResponse,
    MyFinetunes,
)
from serve_apps.api.protocol import GenerateRequest, LoraChoice, SubmitResponse
from serve_apps.api.routers.deps import (
    BODY_ERRORS,
    ERRORS,
    SUBMIT_ERRORS,
    over_limit,
    require_key,
    served_model,
    services,
    submit_job,
    unprocessable,
)
from serve_apps.api.routers.generation import submit_response
from serve_apps.api.routers.images import EXPIRES, SIGNATURE, SIGNED_FILE_ERRORS, signed_file
from serve_apps.jobs.finetune_data import add_file, read_zip
from serve_apps.jobs.finetunes import FinetuneNotFound
from serve_apps.jobs.inputs import InputRejected
from serve_apps.jobs.submission import LimitExceeded
from serve_apps.security.network import BlockedUrl

router = APIRouter(tags=["fine-tuning"], responses=ERRORS)
FORM_FILES = ("files", "files[]")
STOP_WAIT_S = 30.0  # how long delete waits for a training finetune to stop
MULTIPART_SCHEMA = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/FinetuneRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files", "finetune_comment", "mode"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "finetune_comment": {"type": "string"},
                        "mode": {"type": "string"},
                        "trigger_word": {"type": "string"},
                        "iterations": {"type": "integer"},
                    },
                }
            },
        },
        "required": True,
    }
}


def invalid(error: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**item, "loc": ("body", *item["loc"])} for item in error.errors()])


async def read_request(request: Request) -> tuple[FinetuneSettings, dict[str, bytes]]:
    """The settings and the training files of either body shape."""
    finetunes = services(request).service.finetunes
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=finetunes.limits.max_images * 2 + 2, max_fields=40)
        try:
            settings = FinetuneSettings.model_validate(
                {name: value for name, value in form.items() if name not in FORM_FILES}
            )
        except ValidationError as error:
            raise invalid(error) from None
        files: dict[str, bytes] = {}
        uploads = [item for name in FORM_FILES for item in form.getlist(name) if isinstance(item, UploadFile)]
        if not uploads:
            raise unprocessable("files", "no files in the form: add each image as a `files` field.")
        for upload in uploads:
            content = await upload.read(finetunes.limits.max_image_bytes + 1)
            if len(content) > finetunes.limits.max_image_bytes:
                raise unprocessable("files", f"{upload.filename!r} is over {finetunes.limits.max_image_bytes} bytes.")
            add_file(files, (upload.filename or "image").rsplit("/", 1)[-1], content, "files")
        return settings, files
    try:
        body = FinetuneRequest.model_validate_json(await request.body())
    except ValidationError as error:
        raise invalid(error) from None
    try:
        archive = base64.b64decode(body.file_data, validate=True)
    except (binascii.Error, ValueError):
        raise unprocessable("file_data", "is not base64: send the ZIP's bytes base64-encoded.") from None
    return body, read_zip(archive, "file_data", finetunes.limits)


@router.post(
    "/v1/finetune",
    response_model=FinetuneSubmitResponse,
    responses=BODY_ERRORS | SUBMIT_ERRORS,
    openapi_extra=MULTIPART_SCHEMA,
)
async def create_finetune(request: Request, key_id: str = Depends(require_key)) -> FinetuneSubmitResponse:
    """Train an adapter on your images: a character, a style, a product, or (mode `edit`) a change shown
    by before/after pairs. Answers at once; poll `get_result?id=<finetune_id>` or stream its events."""
    if not services(request).service.args.training.enabled:
        raise HTTPException(
            HTTPStatus.NOT_FOUND, "Fine-tuning is off on this server: its operator can set training.enabled: true."
        )
    try:
        settings, files = await read_request(request)
        model = served_model(request, settings.model)
        record = await services(request).service.submit_finetune(model, settings, files, key_id, str(request.base_url))
    except InputRejected as rejected:
        raise unprocessable(rejected.field, rejected.message) from None
    except BlockedUrl as blocked:
        raise unprocessable("webhook_url", str(blocked)) from None
    except LimitExceeded as over:
        raise over_limit(over) from None
    base = str(request.base_url).rstrip("/")
    return FinetuneSubmitResponse(
        finetune_id=record.id, id=record.id, polling_url=f"{base}/v1/get_result?id={record.id}"
    )


async def own_finetune(request: Request, finetune_id: str, key_id: str):
    try:
        return await services(request).service.finetunes.load(finetune_id, key_id)
    except FinetuneNotFound as missing:
        raise HTTPException(HTTPStatus.NOT_FOUND, str(missing)) from None


@router.get("/v1/finetune_details", response_model=FinetuneDetails)
async def finetune_details(
    request: Request, finetune_id: str = Query(max_length=64), key_id: str = Depends(require_key)
) -> FinetuneDetails:
    record = await own_finetune(request, finetune_id, key_id)
    service = services(request).service
    return services(request).views.finetunes.details(record, await service.load_progress(record))


@router.get("/v1/my_finetunes", response_model=MyFinetunes)
async def my_finetunes(request: Request, key_id: str = Depends(require_key)) -> MyFinetunes:
    records = await services(request).service.finetunes.mine(key_id)
    return MyFinetunes(finetunes=[record.id for record in records])


@router.post("/v1/delete_finetune")
async def delete_finetune(request: Request, body: DeleteFinetune, key_id: str = Depends(require_key)) -> dict:
    """Cancels it if it still trains, then removes its adapter, files and record."""
    record = await own_finetune(request, body.finetune_id, key_id)
    service = services(request).service
    if not record.is_final:
        record = await service.cancel(record)
        deadline = time.monotonic() + STOP_WAIT_S
        while not record.is_final and time.monotonic() < deadline:  # it stops at its trainer's next step
            await asyncio.sleep(0.5)
            record = await own_finetune(request, body.finetune_id, key_id)
        if not record.is_final:
            raise HTTPException(
                HTTPStatus.CONFLICT,
                f"Finetune {record.id!r} is still stopping; ask again in a few seconds.",
                headers={"Retry-After": "5"},
            )
    await service.finetunes.delete(record)
    return {"finetune_id": record.id, "deleted": True}


@router.get("/v1/finetunes/{finetune_id}/samples/{name}", responses=SIGNED_FILE_ERRORS, include_in_schema=False)
async def finetune_sample(
    request: Request, finetune_id: str, name: str, exp: int | None = EXPIRES, sig: str | None = SIGNATURE
):
    files = services(request).service.finetunes.files
    path = f"/v1/finetunes/{finetune_id}/samples/{name}"

    sample = asyncio.to_thread(files.load_sample, finetune_id, name)
    return await signed_file(request, path, exp, sig, sample, f"No sample {name!r} of finetune {finetune_id!r}.")


FINETUNED = "-finetuned"


async def apply_finetune(
    request: Request, finetune_id: str, generate: GenerateRequest, key_id: str, strength: float | None = None
) -> GenerateRequest:
    """The request with the key's finetune added to its LoRAs, at `strength` or the finetune's measured best."""
    finetune = await own_finetune(request, finetune_id, key_id)
    if finetune.adapter_source is None:
        raise unprocessable("finetune_id", f"finetune {finetune.id!r} is {finetune.status.value}, not Ready yet.")
    scale = strength if strength is not None else finetune.default_strength or 1.0
    return generate.model_copy(update={"loras": [*generate.loras, LoraChoice(id=finetune.id, scale=scale)]})


async def model_and_finetune(
    request: Request, name: str, generate: GenerateRequest, key_id: str
) -> tuple[str, GenerateRequest]:
    """For the OpenAI routes: `flux-2-klein-4b-finetuned:<finetune_id>` names a served model and a finetune."""
    base, finetuned, finetune_id = name.partition(f"{FINETUNED}:")
    if not finetuned:
        return served_model(request, name), generate
    return served_model(request, base), await apply_finetune(request, finetune_id, generate, key_id)


@router.post("/v1/{model}-finetuned", response_model=SubmitResponse, responses=SUBMIT_ERRORS)
async def generate_finetuned(
    request: Request, model: str, body: FinetunedGenerateRequest, key_id: str = Depends(require_key)
) -> SubmitResponse:
    """The model's usual fields plus `finetune_id` and `finetune_strength` (default: the finetune's measured
    best); the finetune is applied as a LoRA, with any `loras` given too."""
    model = served_model(request, model)
    fields = body.model_dump(exclude={"finetune_id", "finetune_strength"}, exclude_unset=True)
    generate = await apply_finetune(
        request, body.finetune_id, GenerateRequest.model_validate(fields), key_id, body.finetune_strength
    )
    record = await submit_job(request, model, generate, key_id, None)
    return submit_response(request, record)
