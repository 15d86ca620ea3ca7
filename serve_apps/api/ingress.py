"""The Ingress replica: wires storage, keys and worker handles into the FastAPI app.

It never imports torch or diffusers (an import contract says so): variants are read from their specs,
weights described from their settings, and a transformer's layer widths asked of its denoiser."""

from __future__ import annotations

import logging
from dataclasses import asdict

from ray import serve

from deployments.registry import VARIANTS
from deployments.weights import describe_weights
from lora.registry import AdapterRegistry
from serve_apps.api.app import create_app
from serve_apps.api.protocol import ModelInfo
from serve_apps.api.routers.deps import AppServices
from serve_apps.api.views import JobViews
from serve_apps.config import AppArgs, denoiser_deployment_name
from serve_apps.jobs.finetune_records import FINETUNE, FinetuneRecord
from serve_apps.jobs.records import GENERATE, JobRecord
from serve_apps.jobs.service import JobService
from serve_apps.live import open_channel
from serve_apps.security.auth import ApiKeys
from serve_apps.security.signing import UrlSigner, load_signing_key
from serve_apps.store import Database
from serve_apps.store.secret_box import load_webhook_secret_box
from serve_apps.store.storage import JobStore

logger = logging.getLogger("flux_serve.ingress")
SPEC_FIELDS = ("capabilities", "model")  # in GenerationDefaults for validation; /v1/models says them once


def without_spec_fields(items: list[tuple]) -> dict:
    return {name: value for name, value in items if name not in SPEC_FIELDS}


INGRESS_MAX_ONGOING_REQUESTS = 256


class Ingress:
    def __init__(self, args: AppArgs, encoders: dict, denoisers: dict, limiter):
        self.args = args
        kinds = {GENERATE: JobRecord, **({FINETUNE: FinetuneRecord} if args.training.enabled else {})}
        db = Database.open(self.args.database_url, kinds)  # a replica that trains nothing adopts no finetune
        self.keys = ApiKeys.from_environment(self.args.keys_file, db.keys)
        if not self.keys.configured():
            logger.warning(
                "no API keys configured: every request gets 401 until FLUX_API_KEYS or `flux-serve keys create`"
            )
        self.weights = {
            name: describe_weights(self.args.spec(name), model.weights) for name, model in self.args.models.items()
        }
        defaults = {name: weights.defaults for name, weights in self.weights.items()}
        store = JobStore(self.args.storage_url, self.args.storage_options)
        db.jobs.secret_box = load_webhook_secret_box(store)  # webhook secrets sealed at rest
        self.signer = UrlSigner(load_signing_key(store), self.args.result_url_ttl_s)
        self.views = JobViews(self.signer)
        self.adapters = AdapterRegistry(db.adapters, self.transformer_shapes, self.args.adapter_sources())
        self.service = JobService(
            db.jobs, store, encoders, denoisers, self.args, defaults, self.views, limiter, self.adapters, open_channel()
        )
        self.denoisers = denoisers
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
        """Each served model's transformer Linear shapes, asked once of its denoiser (which loaded it).

        Called from a worker thread (LoRA registration), where waiting on a handle is allowed."""
        if self._shapes is None:
            self._shapes = {
                name: handle.linear_shapes.remote().result(timeout_s=self.args.jobs.timeout_s)
                for name, handle in self.denoisers.items()
            }
        return self._shapes

    def describe_models(self) -> list[ModelInfo]:
        """The served models with their weights and replicas, then every other spec this server could serve."""
        running = self._running_replicas()
        served = [self._served_model(name, running) for name in self.args.models]
        available = [
            ModelInfo.from_spec(spec, served=False) for name, spec in VARIANTS.items() if name not in self.args.models
        ]
        return served + available

    def _served_model(self, name: str, running: dict[str, int]) -> ModelInfo:
        model_args = self.args.models[name]
        weights = self.weights[name]
        return ModelInfo.from_spec(
            self.args.spec(name),
            served=True,
            weights=model_args.weights,
            emulated=weights.emulated,
            description=weights.description,
            defaults=asdict(weights.defaults, dict_factory=without_spec_fields),
            replicas={
                "running": running.get(denoiser_deployment_name(name)),
                "min": model_args.autoscaling.min_replicas,
                "max": model_args.autoscaling.max_replicas,
                "num_gpus_each": model_args.num_gpus,
            },
            deterministic=model_args.deterministic,
        )

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
