"""How a job record is shown: to pollers, to BFL clients, in webhooks. Image URLs are signed.

Also how a LoRA registration and a model are shown: where their files are kept, to admin keys only."""

from __future__ import annotations

import base64
from dataclasses import asdict

from deployments.contracts import ReferenceImage
from deployments.progress import Progress as LiveProgress
from serve_apps.api.finetune_views import FinetuneViews
from serve_apps.api.protocol import (
    GetResultResponse,
    JobResponse,
    LoraInfo,
    ModelInfo,
    Progress,
    ResultPayload,
    StepPreview,
)
from serve_apps.jobs.finetune_records import FinetuneRecord
from serve_apps.jobs.records import JobRecord, JobStatus
from serve_apps.security.redaction import public_source, redact_locations, weights_kind
from serve_apps.security.signing import UrlSigner


def shown_request(record: JobRecord) -> dict:
    """The params as the API has always shown them: `loras` for the adapters (a source only if public)."""
    params = record.params
    shown = {name: getattr(params, name) for name in ("prompt", "width", "height", "steps", "guidance", "seed")}
    shown.update(num_images=params.num_images, output_format=params.output_format)
    shown["loras"] = [{"id": a.id, "source": public_source(a.source), "scale": a.scale} for a in params.adapters]
    return shown


def step_preview(record: JobRecord, progress: LiveProgress | None) -> StepPreview | None:
    """The latest picture of a running job, inline as a data URL (a few KB: no second request); none once it ended."""
    if record.status != JobStatus.PENDING or progress is None or progress.preview is None:
        return None
    media_type = "image/png" if progress.preview.startswith(b"\x89PNG") else "image/jpeg"
    image = f"data:{media_type};base64,{base64.b64encode(progress.preview).decode()}"
    return StepPreview(step=progress.preview_step or progress.step, image=image)


def lora_info(record: dict, key_id: str, is_admin: bool) -> LoraInfo:
    """A registration as this key sees it: its file's path or bucket only for an admin key."""
    source = record["source"] if is_admin else public_source(record["source"])
    return LoraInfo(**{**record, "source": source, "yours": record.get("owner_key_id") == key_id})


def model_info(model: ModelInfo, is_admin: bool) -> ModelInfo:
    """A model as this key sees it: what kind of weights back it, where they are only for an admin key."""
    if is_admin:
        return model
    weights = None if model.weights is None else weights_kind(model.weights)
    return model.model_copy(update={"weights": weights, "description": redact_locations(model.description)})


class JobViews:
    def __init__(self, signer: UrlSigner):
        self.signer = signer
        self.finetunes = FinetuneViews(signer)

    def image_urls(self, record: JobRecord) -> list[str]:
        base = record.base_url.rstrip("/")
        return [base + self.signer.sign(f"/v1/images/{record.id}/{name}") for name in record.images]

    def reference_url(self, record: JobRecord, reference: ReferenceImage) -> str:
        return record.base_url.rstrip("/") + self.signer.sign(f"/v1/references/{reference.name}")

    def job(
        self,
        record: JobRecord,
        progress: LiveProgress | None = None,
        queue_position: int | None = None,
        eta_s: float | None = None,
    ) -> JobResponse:
        """`progress` is the live channel's: transient, so a job may show none."""
        if isinstance(record, FinetuneRecord):
            return self.finetunes.job(record, progress, queue_position)
        return JobResponse(
            id=record.id,
            model=record.model,
            status=record.status,
            stage=record.stage.value,
            progress=Progress(step=progress.step, total=progress.of, eta_s=progress.eta_s) if progress else None,
            queue_position=queue_position,
            eta_s=eta_s,
            preview=step_preview(record, progress),
            seed=record.params.seed,
            images=self.image_urls(record),
            timings_s=record.timings_s,
            batch=record.batch,
            cache=record.cache,
            attempts=record.attempts,
            error=record.error,
            created_at=record.created_at,
            updated_at=record.updated_at,
            request=shown_request(record),
            webhook_deliveries=[d.model_dump(exclude_none=True) for d in record.webhook.deliveries]
            if record.webhook
            else None,
            warnings=record.warnings,
            usage=record.usage.model_dump() if record.usage else None,
            references=[self.reference_url(record, reference) for reference in record.params.references],
            mask=self.reference_url(record, record.params.mask) if record.params.mask else None,
            manifest=asdict(record.manifest) if record.manifest else None,
            rerun_of=record.rerun.of if record.rerun else None,
            rerun=record.rerun.model_dump(exclude={"of", "original_images", "original_pass_requests"})
            if record.rerun
            else None,
        )

    def webhook_payload(self, record: JobRecord) -> dict:
        return self.job(record).model_dump(mode="json")

    def bfl_result(self, record: JobRecord, progress: LiveProgress | None) -> GetResultResponse:
        """BFL's get_result shape. Cancelled shows as Error, so BFL clients stop polling."""
        if isinstance(record, FinetuneRecord):
            return self.finetunes.bfl_result(record, progress)
        if record.status == JobStatus.READY:
            urls = self.image_urls(record)
            params = record.params
            result = ResultPayload(
                sample=urls[0],
                samples=urls,
                seed=params.seed,
                prompt=params.prompt,
                width=params.width,
                height=params.height,
                output_format=params.output_format,
            )
            return GetResultResponse(id=record.id, status=record.status, result=result, progress=1.0)
        if record.status == JobStatus.PENDING:
            fraction = progress.step / progress.of if progress else 0.0
            preview = step_preview(record, progress)
            return GetResultResponse(
                id=record.id,
                status=record.status,
                progress=fraction,
                details={"stage": record.stage.value},
                preview=preview.model_dump() if preview else None,
            )
        shown = JobStatus.ERROR if record.status == JobStatus.CANCELLED else record.status
        return GetResultResponse(id=record.id, status=shown, details={"error": record.error})
