"""The finetune trainer on the tiny random-weight checkpoint: its events, checkpoints, stop and adapter. No Ray.

The tiny checkpoint draws noise, so these check the trainer's contract with the job (order, resume, stop, a file
the denoiser loads), not what it learns; tests/unit/test_finetune_concept.py checks that on the offline model.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu
from safetensors.torch import load

from deployments.contracts import AdapterRef, DenoiseJob, GenerationParams
from deployments.denoiser import Denoiser
from deployments.finetune import STRENGTHS, FinetuneExample, FinetuneParams, FinetuneStopped
from lora.adapter_file import inspect_adapter, read_header
from training.dataset import DatasetError
from training.finetune_checkpoint import CheckpointMismatch
from training.finetune_sampling import png_bytes
from training.finetune_worker import FIRST_SAMPLE_STEP, FinetuneWorker
from training.flow_matching import shift_noise_levels
from training.shapes_concepts import draw_scene, training_pairs
from training.shapes_world import Scene

MODEL = "flux-2-klein-4b"
ITERATIONS = 8


def examples(count: int = 4, edits: bool = False) -> list[FinetuneExample]:
    rng = random.Random(0)
    items = []
    for index, (colour, background) in enumerate(training_pairs()[:count]):
        image = png_bytes(draw_scene(Scene("plus", colour, background), rng))
        target = png_bytes(draw_scene(Scene("plus", background, colour), rng)) if edits else None
        caption = "make it TOK" if edits else f"a {colour} TOK on a {background} background"
        items.append(FinetuneExample(f"{index}.png", image, caption, target))
    return items


def params(**changes) -> FinetuneParams:
    settings = {
        "finetune_id": "ft-test",
        "model": MODEL,
        "base_variant": MODEL,  # emulated:tiny builds the served variants only
        "weights": "emulated:tiny",
        "mode": "product",
        "trigger_word": "TOK",
        "iterations": ITERATIONS,
        "learning_rate": 1e-2,
        "lora_rank": 4,
        "sample_every": 5,
        "checkpoint_every": 3,
        **changes,
    }
    return FinetuneParams(**settings)


@pytest.fixture(scope="module")
def worker() -> FinetuneWorker:
    return FinetuneWorker("cpu")


@pytest.fixture(scope="module")
def events(worker) -> list:
    return list(worker.train(params(), examples()))


def tensors(adapter: bytes) -> dict:
    return load(adapter)


def test_events_arrive_in_step_order_with_an_early_sample_checkpoints_and_the_adapter_last(events):
    assert [event.step for event in events] == list(range(1, ITERATIONS + 1))
    assert all(event.of == ITERATIONS and event.loss is not None and np.isfinite(event.loss) for event in events)
    sampled = [event.step for event in events if event.sample_png is not None]
    assert sampled[0] <= FIRST_SAMPLE_STEP and sampled == [5, ITERATIONS], "first at sample_every here, and at the end"
    assert all(event.sample_prompt for event in events if event.sample_png is not None)
    assert [event.step for event in events if event.checkpoint is not None] == [3, 6]
    assert [event.final for event in events] == [False] * (ITERATIONS - 1) + [True]
    final = events[-1]
    assert final.default_strength in STRENGTHS
    details = final.details
    assert details["rank"] == 4 and details["adapted_modules"] > 0 and details["caption_source"] == "given"
    assert details["base_variant"] == MODEL and details["optimizer"] == "AdamW" and details["dtype"] == "float32"
    assert set(details["strength_sweep"]) == {str(strength) for strength in STRENGTHS}
    assert {"load", "cache", "first_sample", "train", "seconds_per_step", "strength_sweep"} <= set(details["timings_s"])


def test_the_adapter_is_a_plain_lora_file_with_its_metadata_that_the_denoiser_applies(events, tmp_path, encoder):
    path = tmp_path / "pytorch_lora_weights.safetensors"
    path.write_bytes(events[-1].adapter)
    assert "__metadata__" in read_header(path)
    info = inspect_adapter(path)
    assert info.metadata["base_model"] == MODEL and info.metadata["trigger_word"] == "TOK"
    assert info.metadata["finetune_id"] == "ft-test" and "product" in info.metadata["tags"]
    assert info.metadata["default_strength"] == events[-1].default_strength and info.rank == 4
    assert any(".ff." in key for key in info.shapes), "the MLPs are adapted, not only attention"
    assert all(key.startswith("transformer.") for key in info.shapes), "diffusers' layout"

    denoiser = Denoiser(MODEL, weights="emulated:tiny")
    [prompt] = encoder.encode(["a red TOK on a green background"])
    request = GenerationParams(prompt="", width=64, height=64, steps=4, guidance=None, seed=3, num_images=1)
    adapted = replace(request, adapters=(AdapterRef("ft-test", str(path), 2.0),))
    [plain] = denoiser.generate([DenoiseJob(request, prompt)])
    [with_adapter] = denoiser.generate([DenoiseJob(adapted, prompt)])
    assert plain.images[0] != with_adapter.images[0]


def test_a_checkpoint_resumes_from_its_step_and_ends_as_the_uninterrupted_run(worker, events):
    checkpoint = next(event for event in events if event.step == 6).checkpoint
    resumed = list(worker.train(params(), examples(), resume=checkpoint))
    assert [event.step for event in resumed] == [7, 8]
    assert resumed[-1].details["resumed_from_step"] == 6
    assert resumed[-2].loss == events[6].loss, "the same batch and noise as the uninterrupted run drew"
    straight, again = tensors(events[-1].adapter), tensors(resumed[-1].adapter)
    assert straight.keys() == again.keys()
    assert all((straight[key] == again[key]).all() for key in straight)


def test_a_checkpoint_of_another_finetune_is_refused_naming_what_differs(worker, events):
    with pytest.raises(CheckpointMismatch, match="lora_rank|rank"):
        next(worker.train(params(lora_rank=8), examples(), resume=events[2].checkpoint))
    with pytest.raises(CheckpointMismatch, match="not a finetune checkpoint"):
        next(worker.train(params(), examples(), resume=b"not a checkpoint"))


def test_should_stop_stops_at_the_next_step(worker):
    seen = []
    with pytest.raises(FinetuneStopped) as stopped:
        for event in worker.train(params(), examples(), should_stop=lambda: len(seen) >= 2):
            seen.append(event.step)
    assert seen == [1, 2] and stopped.value.step == 2 and stopped.value.of == ITERATIONS


def test_full_is_a_high_rank_lora_and_edit_mode_trains_on_pairs(worker):
    [*_, final] = worker.train(params(finetune_type="full", iterations=2, mode="edit"), examples(2, edits=True))
    assert final.details["rank"] == 128 and final.details["finetune_type"] == "full"
    assert final.sample_png is not None and final.default_strength in STRENGTHS


def test_bad_requests_are_refused_saying_what_to_send(worker):
    with pytest.raises(DatasetError, match="no target image"):
        next(worker.train(params(mode="edit"), examples()))
    with pytest.raises(DatasetError, match="only mode 'edit'"):
        next(worker.train(params(), examples(edits=True)))
    with pytest.raises(DatasetError, match="at least one image"):
        next(worker.train(params(), []))


def test_training_noise_levels_follow_the_schedulers_shift():
    sigmas = torch.linspace(0.05, 0.95, 7)
    assert torch.equal(shift_noise_levels(sigmas, {"shift": 1.0}, 16, 16), sigmas), "the offline model: unshifted"
    assert torch.allclose(shift_noise_levels(sigmas, {"shift": 3.0}, 16, 16), 3 * sigmas / (1 + 2 * sigmas))
    klein = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type="exponential")
    mu = compute_empirical_mu(1024, 50)
    expected = klein.time_shift(mu, 1.0, sigmas)
    assert torch.allclose(shift_noise_levels(sigmas, dict(klein.config), 1024, 50), expected)
    assert (expected > sigmas).all(), "a 512 px Base finetune trains at more noise, where its sampler starts"
