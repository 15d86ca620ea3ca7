"""The validated `args:` of serve_config.yaml: what the builder turns into deployments."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from deployments.costs import GPUS, seconds_on, usd_per_gpu_hour
from deployments.registry import DEFAULT_SERVED, VARIANTS, VariantSpec, get_variant
from serve_apps.worker_config import (  # noqa: F401  re-exported: the config is one namespace to its users
    AccelerationArgs,
    AutoscalingArgs,
    BatchingArgs,
    EncoderArgs,
    ModelArgs,
    StrictModel,
)

DEFAULT_STORAGE_URL = os.environ.get("FLUX_SERVE_STORAGE", "~/.local/share/flux-serve")


def encoder_deployment_name(family: str) -> str:
    return f"TextEncoder-{family}"


def denoiser_deployment_name(model: str) -> str:
    return f"Denoiser-{model}"


class IngressArgs(StrictModel):
    num_cpus: float = Field(0.5, ge=0)
    autoscaling: AutoscalingArgs = AutoscalingArgs()


class JobArgs(StrictModel):
    """How long a job may take, and how often it is retried when a worker dies under it."""

    timeout_s: float = Field(600.0, gt=0)
    max_attempts: int = Field(2, ge=1, le=10)
    heartbeat_s: float = Field(2.0, gt=0)
    stale_after_s: float = Field(30.0, gt=0)
    retention_days: float = Field(
        30.0, gt=0, description="finished jobs older than this are deleted, record and images together"
    )


class LimitArgs(StrictModel):
    """Per API key (over them a submit or upload gets 429 with Retry-After) and for the whole service."""

    concurrent_jobs_per_key: int = Field(24, ge=1)
    submits_per_minute_per_key: int = Field(600, ge=1)
    max_queued_jobs: int = Field(
        1000, ge=1, description="unfinished jobs of all keys together; over it a submit gets 503 with Retry-After"
    )
    max_body_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="request bodies larger than this get 413 before they are read"
    )
    uploads_per_minute_per_key: int = Field(
        60, ge=1, description="POST /v1/uploads a minute, counted apart from submits; over it 429 with Retry-After"
    )
    uploads_per_key: int = Field(
        200, ge=1, description="uploads one key keeps stored (each is deleted jobs.retention_days after it is made)"
    )
    upload_bytes_per_key: int = Field(
        500 * 1024**2, ge=1024**2, description="bytes of one key's stored uploads (as stored, PNG); over either, 429"
    )
    max_streams_per_key: int = Field(
        32,
        ge=1,
        description="event streams (GET /v1/jobs/{id}/events) one key may hold open on one ingress replica; "
        "over it 429 with Retry-After",
    )
    max_streams_per_replica: int = Field(
        200,
        ge=1,
        description="event streams of all keys on one ingress replica, kept under its 256 request slots so submits "
        "and polls still get in; over it 503 with Retry-After",
    )
    stream_max_life_s: float = Field(
        300,
        gt=0,
        description="an event stream ends after this long; the client reconnects with Last-Event-ID, and the "
        "reconnect checks its key (or signed URL) again, so a revoked key or an expired URL stops there",
    )


class WebhookArgs(StrictModel):
    max_attempts: int = Field(5, ge=1, le=20)
    initial_backoff_s: float = Field(1.0, ge=0)
    timeout_s: float = Field(10.0, gt=0)


class NetworkArgs(StrictModel):
    """Outbound calls to caller-given URLs (webhooks) reach only public addresses, except these hosts."""

    allowed_private_hosts: list[str] = Field([], description="host names or addresses, e.g. a receiver on the LAN")


class InputArgs(StrictModel):
    """Images in (input_image .. input_image_N, uploads, masks): how many, how big, how long to fetch.
    URLs are fetched through the network guard above."""

    max_references: int = Field(4, ge=1, le=8, description="reference images per request (BFL's klein takes 4)")
    max_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="largest image file, downloaded or sent")
    max_pixels: int = Field(
        16 * 1024 * 1024,
        ge=64 * 64,
        description="largest declared width x height, checked before decoding (the model sees at most 4 MP)",
    )
    timeout_s: float = Field(10.0, gt=0, description="whole download of one image URL, redirects included")
    max_redirects: int = Field(3, ge=0, le=10)
    concurrent_images_per_key: int = Field(
        2, ge=1, description="images one key fetches or decodes at once per ingress replica; more wait up to timeout_s"
    )
    concurrent_images_per_replica: int = Field(4, ge=1, description="the same for all keys (4 decode threads)")
    decoded_cache_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="input images kept decoded per ingress replica, by the digest of the bytes sent (0: none)",
    )


class SafetyArgs(StrictModel):
    """An image safety checker for inputs (Request Moderated) and outputs (Content Moderated), gated
    by each request's safety_tolerance. Off when `checker` is None."""

    checker: str | None = Field(
        None,
        description="'nudenet' (the optional extra flux-serve[nudenet]) or 'module:Class' of an ImageSafetyChecker",
    )


class ModerationArgs(StrictModel):
    """Prompts matching any of these case-insensitive regular expressions end Request Moderated."""

    blocked_patterns: list[str] = []

    @field_validator("blocked_patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"blocked pattern {pattern!r} is not a regular expression: {error}") from None
        return patterns


class TrainingArgs(StrictModel):
    """Fine-tuning (`POST /v1/finetune`): where trainings run, how many, and what a finetune may hold."""

    enabled: bool = Field(True, description="false: POST /v1/finetune answers 404 and no trainer starts")
    worker: str = Field(
        "training.finetune_worker:FinetuneWorker",
        description="the trainer class, module:Class, imported only inside its own Ray actor",
    )
    num_gpus: float = Field(0.5, ge=0, description="GPU share of one training (a Ray actor of its own)")
    num_cpus: float = Field(1.0, ge=0)
    max_unfinished: int = Field(4, ge=1, description="finetunes queued or training, all keys together (503 over)")
    max_concurrent_per_key: int = Field(1, ge=1, description="finetunes of one key queued or training (429 over)")
    max_finetunes_per_key: int = Field(20, ge=1, description="finetunes one key keeps (delete one to make room)")
    min_images: int = Field(1, ge=1)
    max_images: int = Field(50, ge=1, le=200)
    max_data_bytes: int = Field(200 * 2**20, ge=1, description="a training set's files together, as unpacked")
    sample_every: int = Field(50, ge=1, description="steps between sample images (the first comes early)")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints a retry resumes from")
    timeout_s: float = Field(6 * 3600.0, gt=0, description="one training attempt's longest run")
    base_weights: dict[str, str] = Field(
        {}, description="per served model, the weights of the undistilled base it trains on (default: the spec's)"
    )


class LoraArgs(StrictModel):
    """Where adapters may be registered from, and how many each denoiser replica keeps loaded."""

    allowed_roots: list[str] = ["~/.local/share/flux-serve/loras"]
    max_loaded_per_replica: int = Field(8, ge=1, le=64)
    max_per_request: int = Field(4, ge=1, le=8)
    allowed_s3_prefixes: list[str] = Field(
        [], description="s3://bucket/prefix/ adapters may come from; empty: no s3:// sources"
    )
    allowed_hub_orgs: list[str] = Field([], description="Hugging Face users/orgs adapters may come from; empty: none")
    max_download_bytes: int = Field(1024**3, ge=1, description="largest remote adapter file fetched")

    def sources(self, storage_options: dict):
        """These settings as `lora.sources.AdapterSources` (imported here only: it loads torch)."""
        from lora.sources import AdapterSources

        return AdapterSources(
            self.allowed_roots,
            self.allowed_s3_prefixes,
            self.allowed_hub_orgs,
            self.max_download_bytes,
            storage_options,
        )


class PricingArgs(StrictModel):
    """What a GPU-second costs, to price every job. Defaults: deployments/costs.py's table, which says
    where each price comes from."""

    gpu_type: str = "rtx-4090"
    usd_per_gpu_hour: dict[str, float] = Field(
        default_factory=usd_per_gpu_hour, description="price per GPU-hour by gpu_type (deployments/costs.py cites each)"
    )
    gpu_s_per_megapixel_step: dict[str, float] = Field(
        default_factory=lambda: {name: spec.cost.gpu_s_per_megapixel_step for name, spec in VARIANTS.items()},
        description="GPU-seconds per megapixel (output and references) per step on gpu_type: the price quoted at "
        "submit; by default the spec's measured figure, scaled from the GPU it was measured on by bf16 peak",
    )

    @model_validator(mode="after")
    def _priced(self) -> PricingArgs:
        if self.gpu_type not in self.usd_per_gpu_hour:
            raise ValueError(
                f"gpu_type {self.gpu_type!r} has no price in usd_per_gpu_hour {sorted(self.usd_per_gpu_hour)}"
            )
        if "gpu_s_per_megapixel_step" not in self.model_fields_set and self.gpu_type in GPUS:
            self.gpu_s_per_megapixel_step = {
                name: round(seconds_on(spec.cost, self.gpu_type), 4)
                for name, spec in VARIANTS.items()
                if spec.cost.gpu_s_per_megapixel_step
            }
        return self

    @property
    def usd_per_gpu_second(self) -> float:
        return self.usd_per_gpu_hour[self.gpu_type] / 3600


class AppArgs(StrictModel):
    """Everything under `args:` in serve_config.yaml."""

    models: dict[str, ModelArgs] = Field(default_factory=lambda: {name: ModelArgs() for name in DEFAULT_SERVED})
    encoder: EncoderArgs = EncoderArgs()
    ingress: IngressArgs = IngressArgs()
    jobs: JobArgs = JobArgs()
    limits: LimitArgs = LimitArgs()
    webhooks: WebhookArgs = WebhookArgs()
    network: NetworkArgs = NetworkArgs()
    inputs: InputArgs = InputArgs()
    safety: SafetyArgs = SafetyArgs()
    moderation: ModerationArgs = ModerationArgs()
    loras: LoraArgs = LoraArgs()
    training: TrainingArgs = TrainingArgs()
    pricing: PricingArgs = PricingArgs()
    gpu_memory_gb: float | None = Field(
        None, gt=0, description="memory of one GPU; when set, each real-weight denoiser's num_gpus must hold it"
    )
    result_url_ttl_s: float = Field(600.0, gt=0, description="how long signed image URLs stay valid")
    storage_url: str = Field(DEFAULT_STORAGE_URL, validate_default=True)
    storage_options: dict = Field(default_factory=dict, description="passed to fsspec, e.g. S3 endpoint_url")
    database_url: str | None = Field(
        None,
        description="job state: sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB; "
        "default a SQLite file beside a local storage folder",
    )
    keys_file: str | None = None

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: dict[str, ModelArgs]) -> dict[str, ModelArgs]:
        unknown = sorted(name for name, model in models.items() if (model.variant or name) not in VARIANTS)
        if unknown:
            raise ValueError(
                f"unknown model(s) {unknown}; known: {sorted(VARIANTS)}, or give a served name of your own "
                "its spec with variant: <one of those>"
            )
        if not models:
            raise ValueError("configure at least one model")
        return models

    def adapter_sources(self):
        """Where adapters may come from: `loras`' allowed places plus this service's own finetunes in storage."""
        finetunes = f"{self.storage_url.rstrip('/')}/finetunes"
        loras = self.loras
        if finetunes.startswith("s3://"):
            loras = loras.model_copy(update={"allowed_s3_prefixes": [*loras.allowed_s3_prefixes, f"{finetunes}/"]})
        else:
            local = str(Path(finetunes.removeprefix("file://")).expanduser())
            loras = loras.model_copy(update={"allowed_roots": [*loras.allowed_roots, local]})
        return loras.sources(self.storage_options)

    def spec(self, name: str) -> VariantSpec:
        """The spec a served model runs, under its served name."""
        return get_variant(self.models[name].variant or name).served_as(name)

    @model_validator(mode="after")
    def _priced_under_served_names(self) -> AppArgs:
        """A served name of the operator's own is priced as its spec unless pricing names it."""
        for name, model in self.models.items():
            figures = self.pricing.gpu_s_per_megapixel_step
            if name not in figures and model.variant in figures:
                figures[name] = figures[model.variant]
        return self

    @field_validator("storage_url")
    @classmethod
    def _absolute_local_path(cls, url: str) -> str:
        """Replicas run in other working directories, so local paths are made absolute here."""
        if "://" in url and not url.startswith("file://"):
            return url
        return str(Path(url.removeprefix("file://")).expanduser().resolve())

    @model_validator(mode="after")
    def _database_beside_storage(self) -> AppArgs:
        if self.database_url is None:
            from serve_apps.store.engine import default_database_url

            self.database_url = default_database_url(self.storage_url)
        return self

    @field_validator("keys_file")
    @classmethod
    def _absolute_keys_file(cls, path: str | None) -> str | None:
        return None if path is None else str(Path(path).expanduser().resolve())
