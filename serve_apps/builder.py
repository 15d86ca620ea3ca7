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

from deployments.memory import components
from serve_apps.api.ingress import Ingress
from serve_apps.config import AppArgs
from serve_apps.security.limits import KeyLimiter
from serve_apps.workers import DenoiserServer, EncoderServer

logger = logging.getLogger("flux_serve.builder")


class ConfigError(ValueError):
    """serve_config.yaml `args:` that do not validate; the message names each bad field."""


def validate_args(args: dict | AppArgs) -> AppArgs:
    """The typed config, or ConfigError naming each bad field; placements that cannot fit their GPU share
    are refused here too (their sizes come from the models' architecture, which needs torch to count)."""
    if isinstance(args, AppArgs):
        app_args = args
    else:
        try:
            app_args = AppArgs.model_validate(args or {})
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(['args', *(str(part) for part in problem['loc'])])}: {problem['msg']}"
                for problem in error.errors()
            )
            raise ConfigError(f"serve_config.yaml is invalid: {problems}") from None
    check_gpu_shares(app_args)
    return app_args


def check_gpu_shares(args: AppArgs) -> None:
    """Refuse a placement that cannot fit, with the numbers `flux-serve plan` prints."""
    if args.gpu_memory_gb is None:
        return
    for name, model in args.models.items():
        if model.weights.startswith("emulated") or model.num_gpus == 0:
            continue
        transformer, vae, _encoder = components(args.spec(name), model.acceleration.quantization)
        need_gb = transformer.memory_gb + vae.memory_gb
        have_gb = model.num_gpus * args.gpu_memory_gb
        if need_gb > have_gb:
            raise ConfigError(
                f"serve_config.yaml is invalid: args.models.{name}: {name} needs {need_gb:.1f} GB but num_gpus "
                f"{model.num_gpus} of a {args.gpu_memory_gb:g} GB GPU gives {have_gb:.1f} GB; set its num_gpus to "
                f"at least {need_gb / args.gpu_memory_gb:.2f} (see flux-serve plan)"
            )


def _deployment(cls, options: dict):
    logger.info("deployment %s: %s", options["name"], options)
    return serve.deployment(cls).options(**options)


def build_app(args: dict | AppArgs) -> Application:
    app_args = validate_args(args)
    encoders_by_family, encoders, denoisers = {}, {}, {}
    for model in app_args.models:
        family = app_args.spec(model).text_encoder.family
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
