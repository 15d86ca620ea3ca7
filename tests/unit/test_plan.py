"""Memory needs from the real architectures, and the placement planner."""

import pytest

from deployments.memory import components
from deployments.registry import get_variant
from serve_apps.plan import PlanError, make_plan, render

BOTH = ["flux-2-klein-4b", "flux-2-klein-9b"]


def test_parameter_counts_match_the_model_cards():
    four = {part.kind: part.params / 1e9 for part in components(get_variant("flux-2-klein-4b"))}
    nine = {part.kind: part.params / 1e9 for part in components(get_variant("flux-2-klein-9b"))}
    assert 3.7 < four["transformer"] < 4.1 and 8.8 < nine["transformer"] < 9.3
    assert 3.9 < four["text_encoder"] < 4.1, "Qwen3-4B"
    assert 7.4 < nine["text_encoder"] < 8.3, "Qwen3-8B without its LM head"


def test_one_24gb_card_holds_the_9b_and_offloads_the_rest():
    plan = make_plan(BOTH, "1x24GB")
    assert [part.name for part in plan.gpus[0].parts] == ["flux-2-klein-9b transformer", "flux-2-klein-9b VAE"]
    assert {part.kind for part in plan.on_cpu} == {"text_encoder"}
    assert [part.name for part in plan.one_after_another][0] == "flux-2-klein-4b transformer"
    assert plan.gpus[0].free_gb >= 0


def test_an_80gb_card_holds_everything_and_16gb_cannot_take_the_9b():
    assert not make_plan(BOTH, "1x80GB").on_cpu
    small = make_plan(BOTH, "1x16GB")
    assert "flux-2-klein-9b transformer" in [part.name for part in small.does_not_fit]
    assert "larger than any GPU" in render(small)


def test_bad_gpu_list():
    with pytest.raises(PlanError, match="like 1x24GB"):
        make_plan(BOTH, "a big one")


def test_config_refuses_a_share_too_small_for_real_weights():
    from serve_apps.builder import ConfigError, validate_args

    real_9b = {"weights": "black-forest-labs/FLUX.2-klein-9B", "num_gpus": 0.5}
    with pytest.raises(
        ConfigError,
        match=r"flux-2-klein-9b needs 21.8 GB but num_gpus 0.5 of a 24 GB GPU gives 12.0 GB; set its num_gpus to at least 0.91",
    ):
        validate_args({"gpu_memory_gb": 24, "models": {"flux-2-klein-9b": real_9b}})
    validate_args({"gpu_memory_gb": 80, "models": {"flux-2-klein-9b": real_9b}})
    validate_args({"gpu_memory_gb": 24, "models": {"flux-2-klein-9b": {"weights": "emulated", "num_gpus": 0.5}}})
