"""The same workers on a real GPU (bf16); skipped where none is present."""

import io

import pytest
import torch
from PIL import Image

from deployments.contracts import GenerationParams
from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_generate_on_gpu_in_bf16():
    encoder = TextEncoder("flux-2-klein-4b", weights="emulated:small")
    denoiser = Denoiser("flux-2-klein-4b", weights="emulated:small")
    assert denoiser.device.type == "cuda" and denoiser.dtype == torch.bfloat16
    params = GenerationParams.with_defaults(
        denoiser.defaults, "a red circle", width=512, height=512, seed=1, num_images=4
    )
    [result] = denoiser.generate([encoder.job(params)])
    assert [Image.open(io.BytesIO(b)).size for b in result.images] == [(512, 512)] * 4
