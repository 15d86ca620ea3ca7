"""What a GPU-hour costs and how many GPU-seconds a variant needs: the one place these figures live.

The service's price quote and metering (`pricing:` in serve_config.yaml, whose defaults come from here) and the
benchmark's cost tables (bench/cost.py, unless bench_config.yaml overrides them) read the same numbers, and each
says where it comes from. Torch-free: the ingress reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

HOURS_PER_YEAR = 24 * 365
# Where the variants' figures were measured: `flux-bench --real-size --variants flux-2-klein-4b,flux-2-klein-9b
# --resolutions 512,1024 --steps 1,2,4 --batch-sizes 1,4 --prompts 4` on one NVIDIA H100 80GB HBM3, eager bf16,
# full-size random weights (emulated:real), committed as docs/bench-h100/results.{md,parquet} in 160553a.
H100_RUN = "docs/bench-h100/results.parquet"


@dataclass(frozen=True)
class CostFigures:
    """GPU-seconds a variant takes per megapixel (output and references) per step: the price quoted at submit.

    Measured at the distilled default (4 steps, 1024x1024, batch 1) as the whole request's GPU-seconds (denoise,
    VAE decode and image encoding) / (megapixels x steps), so the default request is quoted what it costs; a
    50-step Base request is quoted about twice its cost, the decode counted once per step there.
    """

    gpu_s_per_megapixel_step: float
    measured_on: str  # a GPUS key
    source: str


KLEIN_4B_COST = CostFigures(
    0.19, "h100", f"{H100_RUN}: flux-2-klein-4b, 1024x1024, batch 1, 4 steps: 0.7504 GPU-s per image / (1 MP x 4)"
)
KLEIN_9B_COST = CostFigures(
    0.26, "h100", f"{H100_RUN}: flux-2-klein-9b, 1024x1024, batch 1, 4 steps: 1.0526 GPU-s per image / (1 MP x 4)"
)
KLEIN_9B_KV_COST = CostFigures(
    0.26, "h100", "the 9B's figure; steps after the first skip the references' work (the KV variant is not measured)"
)


@dataclass(frozen=True)
class GpuCost:
    """One GPU as the price table knows it: a whole card's price per hour in use, and what the bench needs to
    scale seconds measured on another card (dense bf16 peak) and to say whether a run fits it."""

    bench_name: str  # the column the bench's cost tables give it
    usd_per_hour: float
    bf16_tflops: float
    memory_gb: float
    device_name_pattern: str  # a regular expression for torch.cuda.get_device_name
    source: str


def owned_usd_per_busy_hour(
    watts: float, usd_per_kwh: float, card_usd: float, life_years: float, busy_share: float
) -> float:
    """A card you own: its electricity while it works plus its price spread over the hours it works in its life."""
    return watts / 1000 * usd_per_kwh + card_usd / (life_years * HOURS_PER_YEAR * busy_share)


CLOUD_2026 = (
    "on-demand cloud list price the project recorded in 2026-11 (H100 rentals ranged about 2-3.5 USD/h), kept "
    "without a citation: an assumption, set what you pay"
)
SPEC_SHEET = "dense bf16 peak and memory from NVIDIA's spec sheet"
RTX_4090_HOME = {
    "watts": 450,  # NVIDIA's total graphics power for the RTX 4090
    "usd_per_kwh": 0.30,  # an assumption: a household tariff (European-like; set yours)
    "card_usd": 1800,  # an assumption: what the card costs (NVIDIA's launch price was 1,599 USD)
    "life_years": 3,  # an assumption
    "busy_share": 0.5,  # an assumption: the card works half of the hours of its life
}

# Keyed as `pricing.gpu_type` names them.
GPUS: dict[str, GpuCost] = {
    "h100": GpuCost("H100", 2.49, 989, 80, "H100", f"{CLOUD_2026}; {SPEC_SHEET} (SXM)"),
    "a100": GpuCost("A100-80GB", 1.29, 312, 80, "A100", f"{CLOUD_2026}; {SPEC_SHEET}"),
    "l4": GpuCost("L4", 0.71, 121, 24, r"L4\b", f"{CLOUD_2026}; {SPEC_SHEET}"),
    "rtx-4090": GpuCost(
        "RTX 4090 (home)",
        round(owned_usd_per_busy_hour(**RTX_4090_HOME), 2),
        165,
        24,
        "4090",
        f"owned: {RTX_4090_HOME['watts']} W at {RTX_4090_HOME['usd_per_kwh']} USD/kWh plus a "
        f"{RTX_4090_HOME['card_usd']:,} USD card over {RTX_4090_HOME['life_years']} years busy "
        f"{RTX_4090_HOME['busy_share']:.0%} of the time; {SPEC_SHEET}",
    ),
}


def seconds_on(cost: CostFigures, gpu_type: str) -> float:
    """A variant's GPU-seconds per megapixel-step on `gpu_type`: measured on one GPU, scaled to another by
    their dense bf16 peaks (an estimate; the bench measures the real figure where it runs)."""
    measured, target = GPUS[cost.measured_on], GPUS[gpu_type]
    return cost.gpu_s_per_megapixel_step * measured.bf16_tflops / target.bf16_tflops


def usd_per_gpu_hour() -> dict[str, float]:
    """The default of `pricing.usd_per_gpu_hour`."""
    return {name: gpu.usd_per_hour for name, gpu in GPUS.items()}
