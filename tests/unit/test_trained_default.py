"""The shipped offline default draws what it is asked, and its trainer runs end to end."""

import json

import pytest
from diffusers import Flux2KleinPipeline

from bench.shapes_quality import generate
from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
from deployments.weights import TRAINED_CHECKPOINT
from training.shapes_model import TrainingConfig, train
from training.shapes_world import adherence, held_out_scenes


@pytest.fixture(scope="module")
def trained_workers():
    return TextEncoder("flux-2-klein-4b", weights="emulated"), Denoiser("flux-2-klein-4b", weights="emulated")


def test_trained_default_follows_held_out_prompts(trained_workers):
    """Looser floors than the acceptance figures (README), on half the held-out scenes."""
    scenes = held_out_scenes()[::2]
    scores = adherence(scenes, generate(*trained_workers, scenes, seeds=2))
    assert scores["colour"] >= 0.85 and scores["background"] >= 0.85
    assert scores["shape"] >= 0.7 and scores["all"] >= 0.6


def test_trained_default_loads_through_from_pretrained_unchanged():
    pipeline = Flux2KleinPipeline.from_pretrained(TRAINED_CHECKPOINT)
    settings = json.loads((TRAINED_CHECKPOINT / "flux_serve.json").read_text())
    assert pipeline.vae.bn.running_var.min() > 0 and settings["held_out_scores"]["all"] >= 0.8


def test_trainer_runs_end_to_end_on_a_tiny_budget(tmp_path):
    config = TrainingConfig(images=64, vae_steps=2, vae_batch=4, transformer_steps=2, transformer_batch=4, eval_seeds=1)
    settings = train(tmp_path, config)
    assert set(settings["held_out_scores"]) == {"colour", "background", "shape", "all"}
    pipeline = Flux2KleinPipeline.from_pretrained(tmp_path)
    assert pipeline.transformer.dtype == pipeline.vae.dtype
