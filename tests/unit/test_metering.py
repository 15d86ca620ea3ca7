"""GPU-second and cost arithmetic on known inputs."""

import pytest

from deployments.contracts import GenerationParams
from deployments.denoiser import GenerationResult
from serve_apps.builder import ConfigError, validate_args
from serve_apps.config import PricingArgs
from serve_apps.workers import job_gpu_seconds


def result(images: int, batch_images: int, denoise_s: float, decode_s: float) -> GenerationResult:
    params = GenerationParams(prompt="", width=64, height=64, steps=4, guidance=None, seed=0, output_format="png")
    return GenerationResult(
        params,
        images=[b""] * images,
        timings_s={"denoise": denoise_s, "decode": decode_s},
        batch_images=batch_images,
        batch_requests=2,
    )


def test_a_job_pays_its_share_of_the_pass_at_the_replicas_gpu_fraction():
    assert job_gpu_seconds(result(3, 12, 1.5, 0.5), num_gpus=0.5) == pytest.approx(2.0 * 0.5 * 3 / 12)
    assert job_gpu_seconds(result(1, 1, 2.0, 0.0), num_gpus=1.0) == pytest.approx(2.0)
    assert job_gpu_seconds(result(0, 0, 0.0, 0.0), num_gpus=1.0) == 0.0


def test_prices_per_gpu_second():
    pricing = PricingArgs(gpu_type="h100", usd_per_gpu_hour={"h100": 3.6})
    assert pricing.usd_per_gpu_second == pytest.approx(0.001)
    with pytest.raises(ConfigError, match="gpu_type 'tpu' has no price"):
        validate_args({"pricing": {"gpu_type": "tpu"}})
