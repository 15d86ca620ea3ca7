"""What an image costs: measured GPU-seconds times a GPU's price per hour.

The price table is the service's own (deployments/costs.py: the one place the prices and the
quote's seconds per megapixel-step live, with where each comes from); bench_config.yaml may
override it with what you pay. The hosted-API reference points sit beside the results so the
comparison is in the output.
Seconds measured on one GPU are priced on the others by their peak bf16 throughput (an
estimate, said so in the output), and not at all on a card whose memory the run outgrew.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.costs import GPUS

SECONDS_PER_HOUR = 3600
USABLE_MEMORY_SHARE = 0.95  # the CUDA context and allocator fragmentation take the rest


class GpuPrice(BaseModel):
    """A GPU's price per hour: rented (`usd_per_hour`) or owned (power x tariff + amortization)."""

    model_config = ConfigDict(extra="forbid")

    usd_per_hour: float | None = Field(None, ge=0)
    watts: float | None = Field(None, gt=0)
    usd_per_kwh: float | None = Field(None, ge=0)
    amortized_usd_per_hour: float = Field(0.0, ge=0)
    bf16_tflops: float | None = Field(None, gt=0, description="dense peak, to estimate seconds measured on another GPU")
    memory_gb: float | None = Field(None, gt=0)
    device_name_pattern: str | None = Field(None, description="a regular expression for torch.cuda.get_device_name")
    note: str = ""

    @model_validator(mode="after")
    def _one_way_to_price(self) -> "GpuPrice":
        owned = self.watts is not None and self.usd_per_kwh is not None
        if (self.usd_per_hour is not None) != owned:
            return self
        raise ValueError("give either usd_per_hour (rented) or watts and usd_per_kwh (owned), not both or neither")

    @property
    def hourly_usd(self) -> float:
        if self.usd_per_hour is not None:
            return self.usd_per_hour
        return self.watts / 1000 * self.usd_per_kwh + self.amortized_usd_per_hour

    def fits(self, peak_gpu_memory_mb: float | None) -> bool:
        if self.memory_gb is None or peak_gpu_memory_mb is None:
            return True
        return peak_gpu_memory_mb <= self.memory_gb * 1024 * USABLE_MEMORY_SHARE


def shipped_gpu_prices() -> dict[str, GpuPrice]:
    """deployments/costs.py's table, under the bench's column names: what the service prices with by default."""
    return {
        gpu.bench_name: GpuPrice(
            usd_per_hour=gpu.usd_per_hour,
            bf16_tflops=gpu.bf16_tflops,
            memory_gb=gpu.memory_gb,
            device_name_pattern=gpu.device_name_pattern,
            note=gpu.source,
        )
        for gpu in GPUS.values()
    }


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clip_model_path: str | None = None
    gpu_prices: dict[str, GpuPrice] = Field(default_factory=shipped_gpu_prices, min_length=1)
    hosted_reference_usd_per_image: dict[str, float] = {}

    def gpu_named(self, device_name: str) -> str | None:
        """The priced GPU a run's device is (e.g. 'NVIDIA H100 80GB HBM3' is H100), if any."""
        for gpu, price in self.gpu_prices.items():
            if price.device_name_pattern and re.search(price.device_name_pattern, device_name, re.IGNORECASE):
                return gpu
        return None


def load_config(path: Path) -> BenchConfig:
    return BenchConfig.model_validate(yaml.safe_load(Path(path).read_text()))


def gpu_seconds_per_image(wall_seconds: float, gpu_fraction: float, images: int) -> float:
    """A replica holding 0.5 of a GPU for 2 s used 1 GPU-second, shared by its images."""
    return wall_seconds * gpu_fraction / images


def seconds_on(gpu_seconds: float, measured_on: GpuPrice | None, target: GpuPrice) -> float:
    """Seconds measured on `measured_on`, scaled to `target` by peak bf16 throughput where both give it."""
    if measured_on is None or measured_on is target or not (measured_on.bf16_tflops and target.bf16_tflops):
        return gpu_seconds
    return gpu_seconds * measured_on.bf16_tflops / target.bf16_tflops


def usd_per_image(gpu_seconds: float, price: GpuPrice) -> float:
    return gpu_seconds * price.hourly_usd / SECONDS_PER_HOUR
