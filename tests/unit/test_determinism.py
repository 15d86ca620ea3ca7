"""Deterministic mode: a job's bytes do not depend on who shared its call, the kernels' choice is scoped to the
denoiser's calls, the ETA packs passes as the mode does, and a rerun that differs says why and what to change."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from deployments.contracts import GenerationParams
from deployments.denoiser import Denoiser
from deployments.determinism import deterministic_kernels
from deployments.encoder import TextEncoder
from serve_apps.config import AppArgs
from serve_apps.jobs.eta import JobWork, Serving, call_ends
from serve_apps.jobs.pace import Curve, Pace
from serve_apps.jobs.records import RerunCheck
from serve_apps.jobs.reruns import compare_images
from serve_apps.live import InProcessChannel
from serve_apps.workers import DenoiserServer

MODEL = "flux-2-klein-4b"
SIDE_PX = 256  # at this size the tiny model's batched kernels round differently from a lone image's


def pixels(image: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image)), dtype=np.int16)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(MODEL, weights="emulated:tiny")


def jobs(encoder: TextEncoder, denoiser: Denoiser):
    defaults = denoiser.defaults
    own = GenerationParams.with_defaults(defaults, "a red circle", width=SIDE_PX, height=SIDE_PX, seed=1)
    other = GenerationParams.with_defaults(
        defaults, "a green square", width=SIDE_PX, height=SIDE_PX, seed=7, num_images=3
    )
    return encoder.job(replace(own, output_format="png")), encoder.job(replace(other, output_format="png"))


def test_batched_with_another_job_the_bytes_change_unless_the_model_is_deterministic(encoder):
    for deterministic in (False, True):
        denoiser = Denoiser(MODEL, weights="emulated:tiny", device="cpu", deterministic=deterministic)
        own, other = jobs(encoder, denoiser)
        [alone] = denoiser.generate([own])
        batched, _ = denoiser.generate([own, other])
        difference = int(np.abs(pixels(alone.images[0]) - pixels(batched.images[0])).max())
        if deterministic:
            assert batched.batch_requests == 1 and batched.batch_images == 1, "a pass of its own"
            assert batched.images == alone.images, "the same bytes whoever shared its call"
        else:
            assert batched.batch_requests == 2 and batched.batch_images == 4, "one pass with the other job"
            assert difference > 0, "this is what deterministic mode is for: batched, the last bits move"


def test_a_requests_own_images_still_share_its_passes():
    denoiser = Denoiser(MODEL, weights="emulated:tiny", device="cpu", deterministic=True, max_images_per_forward=2)
    defaults = denoiser.defaults
    three = GenerationParams.with_defaults(defaults, "p", width=64, height=64, num_images=3)
    one = GenerationParams.with_defaults(defaults, "q", width=64, height=64)
    passes = denoiser._plan_forward_passes([three, one, one])
    assert [[(slot.request_index, slot.image_index) for slot in chunk] for chunk in passes] == [
        [(0, 0), (0, 1)],
        [(0, 2)],
        [(1, 0)],
        [(2, 0)],
    ]


def test_deterministic_kernels_hold_inside_the_call_only():
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    with deterministic_kernels(True):
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before
    with deterministic_kernels(False):
        assert torch.are_deterministic_algorithms_enabled() == before[0]


def test_the_eta_gives_each_job_of_a_deterministic_model_its_own_pass():
    pace = Pace(Curve(1.0), Curve(0.0), encode_s=0.0, overhead_s=0.0, cold_start_s=0.0, learned_from=1)
    one = JobWork(width=1024, height=1024, steps=4, images=1)
    shared = Serving(1, 4, 8, 8 * 1024 * 1024, batch_wait_s=0.0)
    assert call_ends([one, one], pace, shared) == pytest.approx([8.0, 8.0, 8.0]), "one pass of two images"
    alone = replace(shared, shares_passes=False)
    assert call_ends([one, one], pace, alone) == pytest.approx([4.0, 8.0, 8.0]), "two passes, one after another"


def test_the_config_reaches_the_denoiser_and_the_eta(tmp_path):
    made = {}

    class Recorded:
        def __init__(self, *_args, **kwargs):
            made.update(kwargs)

    args = AppArgs(storage_url=str(tmp_path), models={MODEL: {"weights": "emulated:tiny", "deterministic": True}})
    DenoiserServer(args, MODEL, denoiser_class=Recorded, channel=InProcessChannel())
    assert made["deterministic"] is True
    assert AppArgs(storage_url=str(tmp_path), models={MODEL: {}}).models[MODEL].deterministic is False


def png(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_rerun_that_differs_says_why_and_what_makes_it_equal():
    base = np.full((8, 8, 3), 100, np.uint8)
    moved = base.copy()
    moved[2, 2, 0] = 101
    batched = RerunCheck(of="a", original_images=["0.png"], original_pass_requests=3)
    verdict = compare_images(batched, [png(base)], [png(moved)])
    assert verdict.max_pixel_difference == 1 and "shared its forward pass" in verdict.note
    assert "deterministic: true" in verdict.note
    alone = compare_images(RerunCheck(of="a", original_images=["0.png"]), [png(base)], [png(moved)])
    assert "kernels rounded differently" in alone.note and "deterministic: true" in alone.note
    rerun_batched = compare_images(RerunCheck(of="a", original_images=["0.png"]), [png(base)], [png(moved)], 2)
    assert "shared its forward pass" in rerun_batched.note
