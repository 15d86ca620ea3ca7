"""How a finetune is shown: its details (BFL's finetune_details plus progress and samples), its
get_result, and its job view. Sample URLs are signed like result images."""

from __future__ import annotations

from deployments.progress import Progress as LiveProgress
from serve_apps.api.finetune_protocol import FinetuneDetails
from serve_apps.api.protocol import GetResultResponse, JobResponse, Progress
from serve_apps.jobs.finetune_records import FinetuneRecord
from serve_apps.jobs.records import JobStatus
from serve_apps.security.signing import UrlSigner


def sample_path(finetune_id: str, name: str) -> str:
    return f"/v1/finetunes/{finetune_id}/samples/{name}"


def shown_settings(record: FinetuneRecord) -> dict:
    params = record.params
    return {
        "finetune_comment": record.comment,
        "mode": params.mode,
        "trigger_word": params.trigger_word,
        "iterations": params.iterations,
        "learning_rate": params.learning_rate,
        "lora_rank": params.lora_rank,
        "finetune_type": params.finetune_type,
        "priority": params.priority,
        "captioning": params.captioning,
        "model": record.model,
        "base_variant": params.base_variant,
    }


class FinetuneViews:
    def __init__(self, signer: UrlSigner):
        self.signer = signer

    def sample_urls(self, record: FinetuneRecord) -> list[str]:
        base = record.base_url.rstrip("/")
        return [base + self.signer.sign(sample_path(record.id, name)) for name in record.samples]

    def details(self, record: FinetuneRecord, progress: LiveProgress | None) -> FinetuneDetails:
        details = dict(record.details)
        if record.params.finetune_type == "full":
            details.setdefault("trained_as", f"a LoRA of rank {record.params.rank} (a full finetune as a LoRA)")
        return FinetuneDetails(
            finetune_id=record.id,
            status=record.status.value,
            images=record.images,
            captions_written=record.captions_written,
            progress={"step": progress.step, "total": progress.of, "eta_s": progress.eta_s} if progress else None,
            samples=self.sample_urls(record),
            default_strength=record.default_strength,
            error=record.error,
            details=details,
            created_at=record.created_at,
            **shown_settings(record),
        )

    def job(self, record: FinetuneRecord, progress: LiveProgress | None, queue_position: int | None) -> JobResponse:
        """The shape of /v1/jobs/{id} (and of the events stream): the samples as its images."""
        return JobResponse(
            id=record.id,
            model=record.model,
            status=record.status,
            stage=record.stage.value,
            progress=Progress(step=progress.step, total=progress.of, eta_s=progress.eta_s) if progress else None,
            queue_position=queue_position,
            seed=record.params.seed,
            images=self.sample_urls(record),
            timings_s=record.timings_s,
            attempts=record.attempts,
            error=record.error,
            created_at=record.created_at,
            updated_at=record.updated_at,
            request={"kind": record.kind, **shown_settings(record)},
            warnings=record.warnings,
        )

    def bfl_result(self, record: FinetuneRecord, progress: LiveProgress | None) -> GetResultResponse:
        """BFL answers a finetune's get_result with its status and progress; Ready carries the finetune id."""
        if record.status == JobStatus.READY:
            result = {"finetune_id": record.id, "default_strength": record.default_strength}
            return GetResultResponse(id=record.id, status=record.status, result=result, progress=1.0)
        if record.status == JobStatus.PENDING:
            fraction = progress.step / progress.of if progress else 0.0
            details = {"stage": record.stage.value, "samples": self.sample_urls(record)}
            return GetResultResponse(id=record.id, status=record.status, progress=fraction, details=details)
        shown = JobStatus.ERROR if record.status == JobStatus.CANCELLED else record.status
        return GetResultResponse(id=record.id, status=shown, details={"error": record.error})
