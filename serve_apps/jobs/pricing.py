"""BFL's submit fields: megapixels in and out, and the price quoted before the job runs.

The quote is the model's GPU-seconds per megapixel-step on the priced GPU
(`pricing.gpu_s_per_megapixel_step`, by default deployments/costs.py's measured figures, which the
bench measures again beside them) times the latent the job denoises (output and reference
tokens, twice with CFG) and its steps, at the price table's GPU-second, in BFL credits
(1 credit = $0.01). What the job really used is metered when it ends (`usage` in /v1/jobs/{id}).
"""

from __future__ import annotations

from deployments.contracts import GenerationParams
from serve_apps.config import PricingArgs

MEGAPIXEL = 1024 * 1024
REFERENCE_AREA_PX = 1024 * 1024  # diffusers' klein pipeline shrinks larger references to this
USD_PER_CREDIT = 0.01


def megapixels(params: GenerationParams) -> tuple[float, float]:
    """(input_mp, output_mp): the references as the model sees them, and all output images."""
    input_px = sum(min(REFERENCE_AREA_PX, ref.width * ref.height) for ref in params.references)
    return round(input_px / MEGAPIXEL, 4), round(params.width * params.height * params.num_images / MEGAPIXEL, 4)


def megapixel_steps(params: GenerationParams) -> float:
    """What the quote counts: the latent's megapixels (outputs, and every image's pass carries the reference tokens)
    times the transformer passes (steps, twice each with CFG). The bench divides measured GPU-seconds by it."""
    input_mp, output_mp = megapixels(params)
    latent_mp = output_mp + input_mp * params.num_images
    return latent_mp * params.steps * (2 if params.uses_cfg else 1)


def quote_credits(model: str, params: GenerationParams, pricing: PricingArgs) -> float | None:
    """The price of a job before it runs, or None for a model with no throughput figure."""
    gpu_s_per_mp_step = pricing.gpu_s_per_megapixel_step.get(model)
    if gpu_s_per_mp_step is None:
        return None
    gpu_s = gpu_s_per_mp_step * megapixel_steps(params)
    return float(f"{gpu_s * pricing.usd_per_gpu_second / USD_PER_CREDIT:.4g}")  # 4 significant digits
