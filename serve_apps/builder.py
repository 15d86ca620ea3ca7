"""The one place that turns plain classes into Ray Serve deployments and binds them.

`serve run serve_config.yaml` calls `build_app(args)` with the config's `args:`; they are
validated first, so a bad field is named before anything starts. The typed config is bound
whole; each wrapper says its own deployment options, logged here once.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError
from ray import serve
from ray.serve import Application

from deployments.registry import get_variant
from serve_apps.config import AppArgs
from serve_apps.ingress import Ingress
from serve_apps.limits import KeyLimiter
from serve_apps.workers import DenoiserServer, EncoderServer

logger = logging.getLogger("flux_serve.builder")


class ConfigError(ValueError):
    """serve_config.yaml `args:` that do not validate; the message names each bad field."""


def validate_args(args: dict | AppArgs) -> AppArgs:
    if isinstance(args, AppArgs):
        return args
    try:
        return AppArgs.model_validate(args or {})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(['args', *(str(part) for part in problem['loc'])])}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ConfigError(f"serve_config.yaml is invalid: {problems}") from None


def _deployment(cls, options: dict):
    logger.info("deployment %s: %s", options["name"], options)
    return serve.deployment(cls).options(**options)


def build_app(args: dict | AppArgs) -> Application:
    app_args = validate_args(args)
    encoders_by_family, encoders, denoisers = {}, {}, {}
    for model in app_args.models:
        family = get_variant(model).text_encoder.family
        if family not in encoders_by_family:
            options = EncoderServer.deployment_options(app_args, model)
            encoders_by_family[family] = _deployment(EncoderServer, options).bind(app_args, model)
        encoders[model] = encoders_by_family[family]
        options = DenoiserServer.deployment_options(app_args, model)
        denoisers[model] = _deployment(DenoiserServer, options).bind(app_args, model)
    limiter = _deployment(KeyLimiter, KeyLimiter.deployment_options()).bind(
        concurrent_jobs=app_args.limits.concurrent_jobs_per_key,
        requests_per_minute=app_args.limits.submits_per_minute_per_key,
        lease_s=app_args.jobs.timeout_s * app_args.jobs.max_attempts,
        max_queued_jobs=app_args.limits.max_queued_jobs,
    )
    ingress = _deployment(serve.ingress()(Ingress), Ingress.deployment_options(app_args))
    return ingress.bind(app_args, encoders, denoisers, limiter)
