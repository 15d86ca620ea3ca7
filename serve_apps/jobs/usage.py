"""What a key has used, and where a waiting job stands in the queue."""

from __future__ import annotations

from serve_apps.config import PricingArgs
from serve_apps.records import JobRecord

TOTALS = ("jobs", "images", "gpu_seconds", "cost_usd")


def usage_summary(records: list[JobRecord], pricing: PricingArgs) -> dict:
    """GPU-seconds and cost of finished jobs, per model and in all."""
    per_model: dict[str, dict] = {}
    for record in records:
        if record.usage is None:
            continue
        totals = per_model.setdefault(record.model, dict.fromkeys(TOTALS, 0))
        totals["jobs"] += 1
        totals["images"] += len(record.images)
        totals["gpu_seconds"] += record.usage.gpu_seconds
        totals["cost_usd"] += record.usage.cost_usd
    overall = {key: sum(totals[key] for totals in per_model.values()) for key in TOTALS}
    return {
        "gpu_type": pricing.gpu_type,
        "usd_per_gpu_hour": pricing.usd_per_gpu_hour[pricing.gpu_type],
        "models": per_model,
        "total": overall,
    }


def jobs_ahead(record: JobRecord, pending: list[JobRecord]) -> int | None:
    """How many jobs of the same model were submitted earlier and have not started denoising."""
    if not record.is_waiting:
        return None
    return sum(
        1
        for other in pending
        if other.id != record.id
        and other.model == record.model
        and other.is_waiting
        and other.created_at < record.created_at
    )
