"""Resolving the `weights:` setting, without loading anything heavy."""

import pytest

from deployments.emulation import UnknownEmulationSizeError
from deployments.loading import resolve_weights
from deployments.registry import get_variant
from deployments.weights import WeightsError, describe_weights

VARIANT = get_variant("flux-2-klein-4b")


def test_emulated_tiny_says_so_and_carries_its_text_settings():
    resolved = resolve_weights(VARIANT, "emulated:tiny")
    assert resolved.emulated and "emulated" in resolved.description
    assert resolved.max_sequence_length == 64 and resolved.text_encoder_out_layers == (1, 2, 3)


def test_hugging_face_id_keeps_the_real_text_settings():
    resolved = resolve_weights(VARIANT, "black-forest-labs/FLUX.2-klein-4B")
    assert not resolved.emulated
    assert resolved.max_sequence_length == 512 and resolved.text_encoder_out_layers == (9, 18, 27)
    assert (resolved.defaults.steps, resolved.defaults.distilled) == (4, True)


def test_plain_emulated_is_the_trained_shapes_model_for_every_variant():
    for name in ("flux-2-klein-4b", "flux-2-klein-9b"):
        resolved = resolve_weights(get_variant(name), "emulated")
        assert resolved.emulated and "trained" in resolved.description and "random" not in resolved.description
        assert (resolved.defaults.width, resolved.defaults.height) == (64, 64)
        assert not resolved.defaults.distilled and resolved.defaults.guidance > 1


@pytest.mark.parametrize("weights", ["emulated", "emulated:tiny", "black-forest-labs/FLUX.2-klein-4B"])
def test_describe_agrees_with_resolve_without_building(weights):
    assert describe_weights(VARIANT, weights).defaults == resolve_weights(VARIANT, weights).defaults


def test_unknown_emulation_size():
    with pytest.raises(UnknownEmulationSizeError, match="tiny, small"):
        resolve_weights(VARIANT, "emulated:huge")


@pytest.mark.parametrize("weights", ["not a model", "/no/such/folder", "a/b/c"])
def test_unusable_weights_say_what_to_write(weights):
    with pytest.raises(WeightsError, match="Hugging Face id"):
        resolve_weights(VARIANT, weights)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(WeightsError, match="model_index.json"):
        resolve_weights(VARIANT, str(tmp_path))


def test_the_offline_model_says_it_repaints_photos_in_its_palette():
    """/v1/models shows this description beside the offline model (issue 26 item 10)."""
    described = describe_weights(get_variant("flux-2-klein-4b"), "emulated").description
    assert "8 colours" in described and "repainted" in described
