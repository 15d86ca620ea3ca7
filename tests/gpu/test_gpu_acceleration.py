"""Speed-ups on a real GPU: compiled, FP8, other attention backends and GPU JPEG draw what eager bf16 draws.

Quality figures (PSNR, SSIM against eager bf16, same seed) are printed, for the suite's log (bench/gpu_suite.sh
runs this file with -s): on the trained shapes model, whose images mean something, and on emulated:small.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from bench.quality import psnr_db, ssim
from deployments.acceleration import EAGER, Acceleration
from deployments.contracts import GenerationParams
from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
from deployments.images import gpu_jpeg_available

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
MODEL = "flux-2-klein-4b"


def fp8_capable() -> bool:
    try:
        import torchao  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def images(weights: str, acceleration: Acceleration, size: int, output_format: str = "png") -> list[bytes]:
    encoder = TextEncoder(MODEL, weights=weights)
    denoiser = Denoiser(MODEL, weights=weights, acceleration=acceleration)
    params = GenerationParams.with_defaults(
        denoiser.defaults,
        "a red circle on a blue background",
        width=size,
        height=size,
        seed=11,
        num_images=2,
        output_format=output_format,
    )
    return denoiser.generate([encoder.job(params)])[0].images


@pytest.fixture(scope="module")
def eager_images():
    return {weights: images(weights, EAGER, size) for weights, size in (("emulated", 64), ("emulated:small", 256))}


def compare(name: str, eager: list[bytes], other: list[bytes]) -> tuple[float, float]:
    figures = [(psnr_db(pixels(a), pixels(b)), ssim(pixels(a), pixels(b))) for a, b in zip(eager, other)]
    worst_psnr, worst_ssim = min(f[0] for f in figures), min(f[1] for f in figures)
    print(f"\n{name} vs eager bf16: PSNR {worst_psnr:.1f} dB, SSIM {worst_ssim:.4f} (worst of {len(figures)})")
    return worst_psnr, worst_ssim


@pytest.mark.parametrize("weights,size", [("emulated", 64), ("emulated:small", 256)])
def test_compiled_matches_eager(eager_images, weights, size):
    compiled = images(weights, Acceleration(compile=True, fast_decode=True, warmup_sizes=((size, size),)), size)
    psnr, structural = compare(f"{weights} compile+fast-decode", eager_images[weights], compiled)
    assert psnr > 30 and structural > 0.95


@pytest.mark.skipif(not fp8_capable(), reason="FP8 needs torchao and compute capability 8.9+")
@pytest.mark.parametrize("weights,size", [("emulated", 64), ("emulated:small", 256)])
def test_fp8_quality_is_reported(eager_images, weights, size):
    fp8 = images(weights, Acceleration(compile=True, quantization="fp8", warmup_sizes=()), size)
    psnr, structural = compare(f"{weights} compile+fp8", eager_images[weights], fp8)
    assert psnr > 15 and structural > 0.5  # FP8 changes pixels; the figures printed are the result


@pytest.mark.parametrize("backend", ["flash", "cudnn", "efficient", "math"])
def test_attention_backends_draw_alike(eager_images, backend):
    other = images("emulated:small", Acceleration(compile=False, attention_backend=backend, warmup_sizes=()), 256)
    psnr, _ = compare(f"emulated:small attention {backend}", eager_images["emulated:small"], other)
    assert psnr > 30


@pytest.mark.skipif(not gpu_jpeg_available(), reason="GPU JPEG needs torchvision")
def test_gpu_jpeg_is_a_jpeg_of_the_same_image():
    on_gpu = images("emulated:small", Acceleration(compile=False, gpu_jpeg=True, warmup_sizes=()), 256, "jpeg")
    on_cpu = images("emulated:small", EAGER, 256, "jpeg")
    assert all(data[:2] == b"\xff\xd8" for data in on_gpu)
    psnr, _ = compare("emulated:small GPU JPEG vs PIL JPEG", on_cpu, on_gpu)
    assert psnr > 30


def test_warm_up_compiles_before_the_first_request():
    denoiser = Denoiser(MODEL, weights="emulated:small", acceleration=Acceleration(warmup_sizes=((256, 256),)))
    assert denoiser.acceleration.compile is True and denoiser.warmup_s > 0
    print(f"\nwarm-up of a compiled emulated:small denoiser at 256x256: {denoiser.warmup_s:.1f} s")
