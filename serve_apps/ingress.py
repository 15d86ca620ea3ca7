"""The Ingress replica: wires storage, keys and worker handles into the FastAPI app."""

from __future__ import annotations

import logging
from dataclasses import asdict

from diffusers import Flux2Transformer2DModel
from ray import serve

from deployments.registry import get_variant
from deployments.weights import describe_weights, resolve_weights
from lora.compat import linear_shapes
from lora.registry import AdapterRegistry
from serve_apps.app import create_app
from serve_apps.auth import ApiKeys
from serve_apps.config import AppArgs
from serve_apps.db import Database
from serve_apps.jobs import JobService
from serve_apps.protocol import ModelInfo
from serve_apps.routers.deps import AppServices
from serve_apps.signing import UrlSigner, load_signing_key
from serve_apps.storage import JobStore
from serve_apps.views import JobViews
from serve_apps.workers import denoiser_deployment_name

logger = logging.getLogger("flux_serve.ingress")


INGRESS_MAX_ONGOING_REQUESTS = 256


class Ingress:
    def __init__(self, args: AppArgs, encoders: dict, denoisers: dict, limiter):
        self.args = args
        db = Database.open(self.args.database_url)
        self.keys = ApiKeys.from_environment(self.args.keys_file, db.keys)
        if not self.keys.configured():
            logger.warning(
                "no API keys configured: every request gets 401 until FLUX_API_KEYS or `flux-serve keys create`"
            )
        self.weights = {
            name: describe_weights(get_variant(name), model_args.weights)
            for name, model_args in self.args.models.items()
        }
        defaults = {name: weights.defaults for name, weights in self.weights.items()}
        store = JobStore(self.args.storage_url, self.args.storage_options)
        self.signer = UrlSigner(load_signing_key(store), self.args.result_url_ttl_s)
        self.views = JobViews(self.signer)
        self.adapters = AdapterRegistry(
            db.adapters, self.transformer_shapes, self.args.loras.sources(self.args.storage_options)
        )
        self.service = JobService(
            db.jobs, store, encoders, denoisers, self.args, defaults, self.views, limiter, self.adapters
        )
        self._shapes: dict | None = None

    @staticmethod
    def deployment_options(args: AppArgs) -> dict:
        return {
            "name": "Ingress",
            "ray_actor_options": {"num_cpus": args.ingress.num_cpus},
            "autoscaling_config": args.ingress.autoscaling.model_dump(),
            "max_ongoing_requests": INGRESS_MAX_ONGOING_REQUESTS,
        }

    def transformer_shapes(self) -> dict:
        """Each served model's transformer Linear shapes, from its config (built on the meta device)."""
        if self._shapes is None:
            self._shapes = {}
            for name, model_args in self.args.models.items():
                weights = resolve_weights(get_variant(name), model_args.weights)
                config = Flux2Transformer2DModel.load_config(weights.source, subfolder="transformer")
                self._shapes[name] = linear_shapes(config)
        return self._shapes

    def describe_models(self) -> list[ModelInfo]:
        running = self._running_replicas()
        infos = []
        for name, model_args in self.args.models.items():
            variant = get_variant(name)
            weights = self.weights[name]
            infos.append(
                ModelInfo(
                    id=name,
                    weights=model_args.weights,
                    emulated=weights.emulated,
                    description=weights.description,
                    license=variant.license,
                    commercial_use=variant.commercial_use,
                    text_encoder=variant.text_encoder.hf_repo,
                    defaults=asdict(weights.defaults),
                    replicas={
                        "running": running.get(denoiser_deployment_name(name)),
                        "min": model_args.autoscaling.min_replicas,
                        "max": model_args.autoscaling.max_replicas,
                        "num_gpus_each": model_args.num_gpus,
                    },
                )
            )
        return infos

    @staticmethod
    def _running_replicas() -> dict[str, int]:
        try:
            status = serve.status()
        except Exception:
            return {}
        counts = {}
        for application in status.applications.values():
            for name, deployment in application.deployments.items():
                counts[name] = int(deployment.replica_states.get("RUNNING", 0))
        return counts

    def __serve_build_asgi_app__(self):
        return create_app(
            AppServices(self.service, self.keys, self.signer, self.views, self.adapters, self.describe_models)
        )
