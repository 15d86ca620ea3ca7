"""Fine-tuning as a job: submit (quota, checked data, every setting decided once), details, a key's list,
delete. A finetune belongs to the key that made it: for any other key it does not exist (404).

Training runs as the "finetune" job kind (jobs/kinds/finetune.py) under the same core as generation:
lease, heartbeat, adoption, retries from the last checkpoint, cancel, webhook.
"""

from __future__ import annotations

import asyncio
import secrets
from http import HTTPStatus

from deployments.finetune import (
    FinetuneExample,
    FinetuneParams,
    caption_template,
    default_iterations,
    default_learning_rate,
    is_offline_model,
)
from deployments.registry import VARIANTS
from serve_apps.api.finetune_protocol import FinetuneSettings
from serve_apps.config import AppArgs
from serve_apps.jobs.finetune_data import DataLimits, TrainingItem, decode_items
from serve_apps.jobs.finetune_records import FINETUNE, FinetuneRecord
from serve_apps.jobs.records import Webhook
from serve_apps.jobs.submission import LimitExceeded
from serve_apps.security.network import check_public_url_async
from serve_apps.store import Claim, JobsRepository
from serve_apps.store.finetune_files import FinetuneFiles
from serve_apps.store.storage import new_job_id

RETRY_TRAINING_S = 60


class FinetuneNotFound(LookupError):
    pass


class Finetunes:
    def __init__(self, jobs: JobsRepository, files: FinetuneFiles, args: AppArgs, replica_id: str, adapters=None):
        self.jobs = jobs
        self.files = files
        self.args = args
        self.replica_id = replica_id
        self.adapters = adapters

    @property
    def limits(self) -> DataLimits:
        training = self.args.training
        return DataLimits(
            min_images=training.min_images,
            max_images=training.max_images,
            max_image_bytes=self.args.inputs.max_bytes,
            max_total_bytes=training.max_data_bytes,
            max_pixels=self.args.inputs.max_pixels,
        )

    async def submit(
        self, model: str, settings: FinetuneSettings, files: dict[str, bytes], key_id: str, base_url: str
    ) -> tuple[FinetuneRecord, Claim]:
        """Check the key's quota first (a refused submit decodes nothing), then the data; store the data,
        then the job. Raises LimitExceeded, InputRejected, BlockedUrl."""
        await asyncio.to_thread(self.check_quota, key_id)
        if settings.webhook_url:
            await check_public_url_async(
                str(settings.webhook_url), self.args.network.allowed_private_hosts, "webhook_url"
            )
        items = await decode_items(files, "file_data", self.limits, edit_mode=settings.mode == "edit")
        finetune_id = new_job_id()
        params = self.params(finetune_id, model, settings, items)
        examples = [self.example(item, settings) for item in items]
        await asyncio.to_thread(self.files.save_examples, finetune_id, examples)
        record = FinetuneRecord(
            id=finetune_id,
            model=model,
            key_id=key_id,
            base_url=base_url,
            params=params,
            owner=self.replica_id,
            comment=settings.finetune_comment,
            images=len(items),
            captions_written=sum(item.caption is None for item in items) if settings.captioning else 0,
            webhook=Webhook(url=str(settings.webhook_url), secret=settings.webhook_secret)
            if settings.webhook_url
            else None,
        )
        stored, claim = await asyncio.to_thread(self.jobs.create, record, None, None)
        return stored, claim

    def check_quota(self, key_id: str) -> None:
        training = self.args.training
        mine = self.jobs.of_kind(FINETUNE, key_id)
        if len(mine) >= training.max_finetunes_per_key:
            raise LimitExceeded(
                f"this key has {len(mine)} finetunes (training.max_finetunes_per_key); delete one with "
                "POST /v1/delete_finetune first",
                RETRY_TRAINING_S,
            )
        running = [record for record in mine if not record.is_final]
        if len(running) >= training.max_concurrent_per_key:
            raise LimitExceeded(
                f"{len(running)} finetunes of this key are still training (training.max_concurrent_per_key); "
                "wait for one to end",
                RETRY_TRAINING_S,
            )
        if self.jobs.count_unfinished(FINETUNE) >= training.max_unfinished:
            raise LimitExceeded(
                f"the service already trains {training.max_unfinished} finetunes (training.max_unfinished)",
                RETRY_TRAINING_S,
                HTTPStatus.SERVICE_UNAVAILABLE,
            )

    def params(
        self, finetune_id: str, model: str, settings: FinetuneSettings, items: list[TrainingItem]
    ) -> FinetuneParams:
        """Every setting decided here: the base it trains on, the defaults of its mode and model."""
        weights = self.args.models[model].weights
        base_variant, base_weights = self.base_of(model, weights)
        sample_prompts = tuple(
            dict.fromkeys(self.caption(item, settings) for item in items[:2] if not settings.mode == "edit")
        ) or (settings.trigger_word,)
        return FinetuneParams(
            finetune_id=finetune_id,
            model=model,
            base_variant=base_variant,
            weights=base_weights,
            mode=settings.mode,
            trigger_word=settings.trigger_word,
            iterations=settings.iterations or default_iterations(weights, settings.priority),
            learning_rate=settings.learning_rate
            or default_learning_rate(settings.mode, settings.finetune_type, weights),
            lora_rank=settings.lora_rank,
            priority=settings.priority,
            finetune_type=settings.finetune_type,
            captioning=settings.captioning,
            sample_every=self.args.training.sample_every,
            checkpoint_every=self.args.training.checkpoint_every,
            sample_prompts=sample_prompts,
            seed=secrets.randbelow(2**31),
            served_weights=weights if base_weights != weights else None,
        )

    def base_of(self, model: str, weights: str) -> tuple[str, str]:
        """What a finetune for `model` trains on: klein Base where the model is distilled and has one (its
        weights from training.base_weights, else the Base's own source), else the model's own weights."""
        spec = self.args.spec(model)
        base_name = spec.base_name.replace("flux-2-klein-", "flux-2-klein-base-", 1)
        if is_offline_model(weights) or weights.startswith("emulated") or base_name not in VARIANTS:
            return spec.base_name, weights
        return base_name, self.args.training.base_weights.get(model, VARIANTS[base_name].source)

    def caption(self, item: TrainingItem, settings: FinetuneSettings) -> str:
        if item.caption is not None:
            return item.caption
        if settings.captioning:
            return caption_template(settings.mode, settings.trigger_word, item.name)
        return settings.trigger_word

    def example(self, item: TrainingItem, settings: FinetuneSettings) -> FinetuneExample:
        return FinetuneExample(
            name=item.name,
            image_png=item.image.png,
            caption=self.caption(item, settings),
            target_png=item.target.png if item.target is not None else None,
        )

    # -- reads and delete --------------------------------------------------------------------

    async def load(self, finetune_id: str, key_id: str, is_admin: bool = False) -> FinetuneRecord:
        record = await asyncio.to_thread(self.jobs.load, finetune_id)
        if not isinstance(record, FinetuneRecord) or (record.key_id != key_id and not is_admin):
            raise FinetuneNotFound(f"No finetune {finetune_id!r} for this key; GET /v1/my_finetunes lists yours.")
        return record

    async def mine(self, key_id: str) -> list[FinetuneRecord]:
        return await asyncio.to_thread(self.jobs.of_kind, FINETUNE, key_id)

    async def delete(self, record: FinetuneRecord) -> None:
        """Its adapter registration, its files and its record. A finetune still training is cancelled first
        by the caller."""
        if self.adapters is not None:
            await asyncio.to_thread(self.adapters.store.delete_lora, record.id)
        await asyncio.to_thread(self.files.delete, record.id)
        await asyncio.to_thread(self.jobs.delete, [record.id])

    def register(self, record: FinetuneRecord) -> dict:
        """The finished adapter as a LoRA of the finetune's key, private to it, under the finetune's id."""
        return self.adapters.register(
            record.id,
            record.adapter_source,
            trigger_word=record.params.trigger_word,
            tags=[record.params.mode],
            owner_key_id=record.key_id,
            private=True,
        )
