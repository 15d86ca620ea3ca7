"""What a key has used, priced: the per-model sums come from the database."""

from __future__ import annotations

from serve_apps.config import PricingArgs

TOTALS = ("jobs", "images", "gpu_seconds", "cost_usd")


def usage_summary(per_model: dict[str, dict], pricing: PricingArgs) -> dict:
    """GPU-seconds and cost of finished jobs, per model and in all."""
    overall = {key: sum(totals[key] for totals in per_model.values()) for key in TOTALS}
    return {
        "gpu_type": pricing.gpu_type,
        "usd_per_gpu_hour": pricing.usd_per_gpu_hour[pricing.gpu_type],
        "models": per_model,
        "total": overall,
    }
