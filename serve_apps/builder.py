"""The one place that turns plain classes into Ray Serve deployments and binds them.

`serve run serve_config.yaml` calls `build_app(args)` with the config's `args:`; they are
validated first, so a bad field is named before anything starts.
"""

from __future__ import annotations

from pydantic import ValidationError
from ray import serve
from ray.serve import Application

from deployments.registry import get_variant
from serve_apps.config import AppArgs, AutoscalingArgs
from serve_apps.ingress import Ingress, denoiser_deployment_name, encoder_deployment_name
from serve_apps.limits import KeyLimiter
from serve_apps.workers import DenoiserServer, EncoderServer

INGRESS_MAX_ONGOING_REQUESTS = 256


class ConfigError(ValueError):
    """serve_config.yaml `args:` that do not validate; the message names each bad field."""


def validate_args(args: dict | AppArgs) -> AppArgs:
    if isinstance(args, AppArgs):
        return args
    try:
        return AppArgs.model_validate(args or {})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(['args', *(str(part) for part in problem['loc'])])}: {problem['msg']}" for problem in error.errors()
        )
        raise ConfigError(f"serve_config.yaml is invalid: {problems}") from None


def _autoscaling(autoscaling: AutoscalingArgs) -> dict:
    return autoscaling.model_dump()


def build_app(args: dict | AppArgs) -> Application:
    app_args = validate_args(args)
    encoders_by_family = {}
    encoders, denoisers = {}, {}
    for model, model_args in app_args.models.items():
        family = get_variant(model).text_encoder.family
        if family not in encoders_by_family:
            encoders_by_family[family] = (
                serve.deployment(EncoderServer)
                .options(
                    name=encoder_deployment_name(family),
                    ray_actor_options={"num_cpus": app_args.encoder.num_cpus, "num_gpus": app_args.encoder.num_gpus},
                    autoscaling_config=_autoscaling(app_args.encoder.autoscaling),
                    max_ongoing_requests=2 * app_args.encoder.batching.max_batch_size,
                    user_config=app_args.encoder.batching.model_dump(),
                )
                .bind(
                    model=model,
                    weights=model_args.weights,
                    cache_size=app_args.encoder.cache_size,
                    device=model_args.device,
                    dtype=model_args.dtype,
                )
            )
        encoders[model] = encoders_by_family[family]
        denoisers[model] = (
            serve.deployment(DenoiserServer)
            .options(
                name=denoiser_deployment_name(model),
                ray_actor_options={"num_cpus": model_args.num_cpus, "num_gpus": model_args.num_gpus},
                autoscaling_config=_autoscaling(model_args.autoscaling),
                max_ongoing_requests=2 * model_args.batching.max_batch_size,
                user_config=model_args.batching.model_dump(),
            )
            .bind(
                model=model,
                weights=model_args.weights,
                storage_url=app_args.storage_url,
                storage_options=app_args.storage_options,
                max_images_per_forward=model_args.max_images_per_forward,
                device=model_args.device,
                dtype=model_args.dtype,
                max_loaded_adapters=app_args.loras.max_loaded_per_replica,
                lora_roots=app_args.loras.allowed_roots,
                num_gpus=model_args.num_gpus,
            )
        )
    limiter = (
        serve.deployment(KeyLimiter)
        .options(name="KeyLimiter", num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
        .bind(
            concurrent_jobs=app_args.limits.concurrent_jobs_per_key,
            requests_per_minute=app_args.limits.submits_per_minute_per_key,
            lease_s=app_args.jobs.timeout_s * app_args.jobs.max_attempts,
        )
    )
    ingress = serve.deployment(serve.ingress()(Ingress)).options(
        name="Ingress",
        ray_actor_options={"num_cpus": app_args.ingress.num_cpus},
        autoscaling_config=_autoscaling(app_args.ingress.autoscaling),
        max_ongoing_requests=INGRESS_MAX_ONGOING_REQUESTS,
    )
    return ingress.bind(encoders, denoisers, limiter, app_args.model_dump())
