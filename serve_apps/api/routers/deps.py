"""What every router shares: the services on app.state, the key check, job ownership, submit."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

from fastapi import HTTPException, Request

from deployments.contracts import InvalidRequestError
from deployments.registry import VARIANTS
from lora.registry import AdapterError, AdapterRegistry
from serve_apps.api.protocol import ErrorResponse, GenerateRequest
from serve_apps.api.views import JobViews
from serve_apps.jobs.executors import KEY_CHECKS, run_in
from serve_apps.jobs.inputs import InputRejected
from serve_apps.jobs.service import JobService
from serve_apps.jobs.submission import LimitExceeded
from serve_apps.security.auth import ApiKeys, key_from_headers
from serve_apps.security.limits import OverLimit
from serve_apps.security.network import BlockedUrl
from serve_apps.security.signing import UrlSigner
from serve_apps.store import IdempotencyConflict

MAX_IDEMPOTENCY_KEY_CHARS = 255

ERRORS = {
    HTTPStatus.UNAUTHORIZED.value: {"model": ErrorResponse, "description": "missing or invalid API key"},
    HTTPStatus.NOT_FOUND.value: {"model": ErrorResponse},
    HTTPStatus.TOO_MANY_REQUESTS.value: {
        "model": ErrorResponse,
        "description": "over a per-key limit; see Retry-After",
    },
}
BODY_ERRORS = {
    HTTPStatus.BAD_REQUEST.value: {"model": ErrorResponse, "description": "a body that cannot be parsed"},
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE.value: {
        "model": ErrorResponse,
        "description": "a body over limits.max_body_bytes, refused before it is read",
    },
}
SUBMIT_ERRORS = {
    **ERRORS,
    **BODY_ERRORS,
    HTTPStatus.SERVICE_UNAVAILABLE.value: {
        "model": ErrorResponse,
        "description": "the service holds limits.max_queued_jobs unfinished jobs, or is fetching and decoding "
        "its most input images at once (inputs.concurrent_images_per_replica); see Retry-After",
    },
}


@dataclass(frozen=True)
class AppServices:
    """Everything the routes use, stored on `app.state.services` by `create_app`."""

    service: JobService
    keys: ApiKeys
    signer: UrlSigner
    views: JobViews
    adapters: AdapterRegistry
    describe_models: object  # () -> list[ModelInfo]


def services(request: Request) -> AppServices:
    return request.app.state.services


async def require_key(request: Request) -> str:
    """The caller's key id; off the event loop (database keys are looked up on every request), in a pool of
    its own, so a backlog of other database calls never holds up every request (serve_apps/jobs/executors.py)."""
    return await run_in(KEY_CHECKS, check_key, request.headers, services(request).keys)


def check_key(headers, keys: ApiKeys) -> str:
    """The caller's key id, or 401 saying how to send a key (also run before a body is read)."""
    key_id = keys.identify(key_from_headers(headers))
    if key_id is None:
        if not keys.configured():
            message = "No API keys are configured on this server; set FLUX_API_KEYS or run `flux-serve keys create`."
        else:
            message = "Missing or invalid API key: send it as the `x-key` header or `Authorization: Bearer <key>`."
        raise HTTPException(HTTPStatus.UNAUTHORIZED, message)
    return key_id


async def own_job(request: Request, job_id: str, key_id: str):
    """The caller's job (adopted first if its owner stopped), or 404 for any other job."""
    service = services(request).service
    record = await service.load(job_id, key_id)
    if record is None:
        raise HTTPException(
            HTTPStatus.NOT_FOUND, f"No job {job_id!r} for this key: check the id returned by the submit."
        )
    return await service.adopt_if_stale(record)


def served_model(request: Request, model: str) -> str:
    served_models = services(request).service.served_models
    if model not in served_models:
        served = ", ".join(served_models)
        if model in VARIANTS:
            problem = f"Model {model!r} is known but not deployed here; add it under models: in serve_config.yaml"
        else:
            problem = f"Unknown model {model!r}"
        raise HTTPException(HTTPStatus.NOT_FOUND, f"{problem}. This server serves: {served}.")
    return model


def unprocessable(field: str, message: str) -> HTTPException:
    """A 422 in FastAPI's own validation shape, naming the body field."""
    return HTTPException(
        HTTPStatus.UNPROCESSABLE_ENTITY, [{"loc": ["body", field], "msg": message, "type": "value_error"}]
    )


async def submit_job(request: Request, model: str, body: GenerateRequest, key_id: str, idempotency_key: str | None):
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise HTTPException(
            HTTPStatus.BAD_REQUEST, f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY_CHARS} characters."
        )
    try:
        return await services(request).service.submit(model, body, key_id, str(request.base_url), idempotency_key)
    except AdapterError as error:
        raise unprocessable("loras", str(error)) from None
    except BlockedUrl as blocked:
        raise unprocessable("webhook_url", str(blocked)) from None
    except IdempotencyConflict as conflict:
        raise HTTPException(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            [{"loc": ["header", "idempotency-key"], "msg": f"Idempotency-Key: {conflict}", "type": "value_error"}],
        ) from None
    except (InputRejected, InvalidRequestError) as rejected:
        raise unprocessable(rejected.field, rejected.message) from None
    except (LimitExceeded, OverLimit) as over:
        raise over_limit(over) from None


def over_limit(over: LimitExceeded | OverLimit) -> HTTPException:
    """429 (a limit of the key) or 503 (of the service) saying what was over, with Retry-After."""
    what = "Too many requests" if over.status_code == HTTPStatus.TOO_MANY_REQUESTS else "The service is at capacity"
    return HTTPException(
        over.status_code,
        f"{what}: {over}; retry after {over.retry_after_s} s.",
        headers={"Retry-After": str(over.retry_after_s)},
    )
