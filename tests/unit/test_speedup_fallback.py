"""A speed-up that fails on the replica's GPU (compile without Triton, FP8 without its kernels, nvJPEG absent) is
turned off at start with one warning, and the replica starts and draws what eager draws. On the CPU: the failures
are injected (torch.compile made to raise) or real (gpu_jpeg without CUDA)."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from deployments.acceleration import EAGER, Acceleration
from deployments.contracts import GenerationParams
from deployments.denoiser import Denoiser

MODEL = "flux-2-klein-4b"
WARM_UP_64 = ((64, 64),)


def pixels_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def compile_raising_at_once(*_args, **_kwargs):
    raise RuntimeError("Cannot find a working triton installation")


def compile_raising_at_first_call(function, *_args, **_kwargs):
    """torch.compile is lazy: inductor's failures come at the first call, i.e. at warm-up."""

    def compiled(*_args, **_kwargs):
        raise RuntimeError("inductor: C++ compile error\n<pages of generated code>")

    return compiled


def fallback_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flux_serve.acceleration" and r.levelname == "WARNING"]


def image(denoiser: Denoiser, encoder, seed: int = 5) -> np.ndarray:
    params = GenerationParams.with_defaults(
        denoiser.defaults, "a red circle", width=64, height=64, seed=seed, output_format="png"
    )
    return pixels_of(denoiser.generate([encoder.job(params)])[0].images[0])


@pytest.mark.parametrize("broken_compile", [compile_raising_at_once, compile_raising_at_first_call])
def test_a_failing_compile_falls_back_to_eager_with_one_warning(monkeypatch, caplog, encoder, broken_compile):
    eager = Denoiser(MODEL, weights="emulated:tiny", acceleration=EAGER)
    monkeypatch.setattr(torch, "compile", broken_compile)
    caplog.set_level(logging.WARNING, logger="flux_serve.acceleration")

    denoiser = Denoiser(
        MODEL, weights="emulated:tiny", acceleration=Acceleration(compile=True, warmup_sizes=WARM_UP_64)
    )

    assert denoiser.acceleration.compile is False and denoiser.active_speedups == ()
    for seed in (5, 6):  # requests after the start: no more warnings, the same images as eager
        assert np.array_equal(image(denoiser, encoder, seed), image(eager, encoder, seed))
    [warning] = fallback_warnings(caplog)
    assert "speed-up compile failed on cpu (RuntimeError:" in warning and "runs without it (eager)" in warning
    assert "set models.flux-2-klein-4b.acceleration.compile: false in serve_config.yaml" in warning
    assert "pages of generated code" not in warning, "the warning keeps the error's first line only"


def test_only_the_speedups_that_fail_are_turned_off(monkeypatch, caplog, encoder):
    """gpu_jpeg really fails here (no CUDA), compile fails at warm-up; the math attention backend works and stays."""
    monkeypatch.setattr(torch, "compile", compile_raising_at_first_call)
    caplog.set_level(logging.WARNING, logger="flux_serve.acceleration")
    asked = Acceleration(compile=True, attention_backend="math", gpu_jpeg=True, warmup_sizes=WARM_UP_64)
    assert asked.resolve(torch.device("cpu")).speedups == ("compile", "attention_backend", "gpu_jpeg")

    denoiser = Denoiser(MODEL, weights="emulated:tiny", acceleration=asked)

    assert denoiser.active_speedups == ("attention_backend",) and denoiser.warmup_s > 0
    warnings = fallback_warnings(caplog)
    assert len(warnings) == 2
    assert "speed-up gpu_jpeg failed on cpu (ValueError: gpu_jpeg needs torchvision and a CUDA GPU" in warnings[0]
    assert "while applying it" in warnings[0] and "acceleration.gpu_jpeg: false" in warnings[0]
    assert "at warm-up with compile+attn-math" in warnings[1] and "acceleration.compile: false" in warnings[1]
    math_only = Acceleration(compile=False, attention_backend="math", warmup_sizes=())
    math_only = Denoiser(MODEL, weights="emulated:tiny", acceleration=math_only)
    assert np.array_equal(image(denoiser, encoder), image(math_only, encoder))


def test_a_failure_with_every_speedup_off_is_the_models_own_and_is_raised(monkeypatch):
    def broken_decode(*_args, **_kwargs):
        raise RuntimeError("the model itself is broken")

    monkeypatch.setattr(Denoiser, "decode", broken_decode)
    with pytest.raises(RuntimeError, match="the model itself is broken"):
        Denoiser(MODEL, weights="emulated:tiny", acceleration=Acceleration(warmup_sizes=WARM_UP_64))


def test_speedups_that_work_stay_on_without_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="flux_serve.acceleration")
    denoiser = Denoiser(
        MODEL, weights="emulated:tiny", acceleration=Acceleration(attention_backend="math", warmup_sizes=WARM_UP_64)
    )
    assert denoiser.active_speedups == ("attention_backend",) and fallback_warnings(caplog) == []
    assert denoiser.warmup_s > 0
