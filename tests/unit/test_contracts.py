"""The one conversion from HTTP to params: defaults, seed and CFG decided once, at submit."""

from __future__ import annotations

import pytest

from deployments.contracts import AdapterRef, GenerationDefaults, GenerationParams, InvalidRequestError, ReferenceImage
from serve_apps.api.protocol import GenerateRequest

DISTILLED = GenerationDefaults(steps=4, guidance=1.0, distilled=True, width=1024, height=1024)
GUIDED = GenerationDefaults(steps=16, guidance=3.0, distilled=False, width=64, height=64)


def test_defaults_fill_what_the_request_leaves_out():
    params = GenerateRequest(prompt="a fox", seed=5).to_params(GUIDED)
    assert (params.width, params.height, params.steps, params.guidance, params.seed) == (64, 64, 16, 3.0, 5)
    assert params.uses_cfg and params.output_format == "jpeg"


def test_a_distilled_model_has_no_guidance_and_no_cfg():
    params = GenerateRequest(prompt="a fox", guidance=7.0).to_params(DISTILLED)
    assert params.guidance is None and not params.uses_cfg


def test_edits_take_the_checkpoints_edit_guidance_unless_the_caller_sets_one():
    editing = GenerationDefaults(steps=16, guidance=3.0, distilled=False, width=64, height=64, edit_guidance=1.0)
    reference = (ReferenceImage("c" * 64, "c" * 64 + ".png", 64, 64),)
    edit = GenerateRequest(prompt="make the background yellow").to_params(editing, references=reference)
    assert edit.guidance == 1.0 and not edit.uses_cfg
    assert GenerateRequest(prompt="a fox").to_params(editing).guidance == 3.0
    assert GenerateRequest(prompt="x", guidance=4.0).to_params(editing, references=reference).guidance == 4.0
    assert GenerateRequest(prompt="x").to_params(GUIDED, references=reference).guidance == 3.0


def test_the_seed_is_drawn_once_and_kept():
    params = GenerateRequest(prompt="a fox").to_params(DISTILLED)
    assert 0 <= params.seed <= 2**32 - 1
    assert params == GenerationParams(**{**params.__dict__})


def test_aspect_ratio_uses_the_models_area_and_adapters_and_prompt_pass_through():
    red = AdapterRef("red", "/loras/red", 0.5)
    params = GenerateRequest(prompt="a fox", aspect_ratio="16:9").to_params(DISTILLED, (red,), "redstyle, a fox")
    assert (params.width, params.height) == (1360, 768)
    assert params.adapters == (red,) and params.adapter_set == "red" and params.prompt == "redstyle, a fox"


def test_params_are_frozen():
    params = GenerateRequest(prompt="a fox").to_params(DISTILLED)
    with pytest.raises(AttributeError):
        params.steps = 50


def test_in_process_params_are_checked_against_the_same_limits():
    with pytest.raises(InvalidRequestError) as error:
        GenerationParams.with_defaults(DISTILLED, "x", steps=51)
    assert error.value.field == "steps"
