"""Variants are specs: the three added from specs alone run a job offline, and what a spec says its
pipeline cannot take is refused at submit and never passed to the pipeline's call."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest
from PIL import Image

from deployments.conditioning import no_references
from deployments.contracts import GenerationParams, InvalidRequestError, ReferenceImage
from deployments.denoiser import Denoiser, accepted_arguments
from deployments.encoder import TextEncoder
from deployments.registry import DEFAULT_SERVED, VARIANTS, get_variant
from deployments.weights import describe_weights
from serve_apps.api.protocol import GenerateRequest
from serve_apps.config import AppArgs

NEW_VARIANTS = ("flux-2-klein-base-4b", "flux-2-klein-base-9b", "flux-2-klein-9b-kv")
RED = Image.new("RGB", (64, 64), (220, 30, 30))
RED_REFERENCE = ReferenceImage(sha256="red", name="red.png", width=64, height=64)
ROOT = Path(__file__).resolve().parents[2]


def test_new_variants_are_registry_entries_with_their_pipelines():
    assert set(NEW_VARIANTS) <= set(VARIANTS)
    assert get_variant("flux-2-klein-9b-kv").pipeline_class == "Flux2KleinKVPipeline"
    assert get_variant("flux-2-klein-9b-kv").capabilities.kv_reference_cache
    base = get_variant("flux-2-klein-base-4b")
    assert (base.distilled, base.default_steps, base.capabilities.takes_guidance) == (False, 50, True)
    assert AppArgs(storage_url="/tmp/x").models.keys() == set(DEFAULT_SERVED)


@pytest.mark.parametrize("model", NEW_VARIANTS)
def test_each_new_variant_runs_a_job_on_the_offline_checkpoint(model):
    """Text to image, then an edit with a reference, through the same plain workers the deployments wrap."""
    spec = get_variant(model)
    encoder = TextEncoder(spec, weights="emulated")
    denoiser = Denoiser(spec, weights="emulated", reference_images=lambda reference: RED.copy())
    assert type(denoiser.pipeline).__name__ == spec.pipeline_class
    defaults = denoiser.defaults
    drawn = GenerationParams.with_defaults(defaults, "a red circle on a blue background", seed=1, output_format="png")
    edit = GenerationParams.with_defaults(
        defaults, "make the background yellow", seed=1, output_format="png", references=(RED_REFERENCE,)
    )
    for params in (drawn, edit):
        [result] = denoiser.generate([encoder.job(params)])
        assert Image.open(io.BytesIO(result.images[0])).size == (params.width, params.height)
    assert (drawn.guidance is None) == (not defaults.runs_cfg)


def test_kv_variant_refuses_a_mask_and_guidance_at_submit():
    defaults = describe_weights(get_variant("flux-2-klein-9b-kv"), "emulated").defaults
    request = GenerateRequest(prompt="make it yellow", guidance=5.0, width=64, height=64)
    assert request.to_params(defaults).guidance is None  # the KV pipeline takes no guidance: dropped, as on klein
    with pytest.raises(InvalidRequestError, match="flux-2-klein-9b-kv does not inpaint"):
        request.to_params(defaults, references=(RED_REFERENCE,), mask=RED_REFERENCE)


def test_the_call_passes_only_what_the_pipeline_takes():
    denoiser = Denoiser("flux-2-klein-9b-kv", weights="emulated", reference_images=no_references)
    kept = accepted_arguments(denoiser.pipeline, {"num_inference_steps": 4, "negative_prompt_embeds": None})
    assert kept == {"num_inference_steps": 4}
    with pytest.raises(InvalidRequestError, match="Flux2KleinKVPipeline does not take guidance_scale"):
        accepted_arguments(denoiser.pipeline, {"guidance_scale": 4.0})


def test_an_operator_serves_a_spec_under_a_name_of_their_own(tmp_path):
    args = AppArgs(storage_url=str(tmp_path), models={"studio-look": {"variant": "flux-2-klein-4b"}})
    spec = args.spec("studio-look")
    assert (spec.name, spec.base_name, spec.pipeline_class) == ("studio-look", "flux-2-klein-4b", "Flux2KleinPipeline")
    priced = args.pricing.gpu_s_per_megapixel_step
    assert priced["studio-look"] == priced["flux-2-klein-4b"], "priced as its spec, on the configured GPU"
    with pytest.raises(ValueError, match="give a served name of your own its spec"):
        AppArgs(storage_url=str(tmp_path), models={"studio-look": {}})


def test_no_code_asks_for_a_variant_by_name():
    """No `if model == "flux-2-klein-..."` in serving code: what differs between variants is in their specs."""
    compared = []
    for path in [*ROOT.glob("serve_apps/**/*.py"), *ROOT.glob("deployments/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                isinstance(side, ast.Constant) and isinstance(side.value, str) and side.value.startswith("flux-2")
                for side in [node.left, *node.comparators]
            ):
                compared.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert compared == []


def test_flux_serve_run_and_plan_take_a_served_name_of_an_operators_own(tmp_path, capsys):
    """`flux-serve run` counts logical GPUs and `flux-serve plan` places models by their specs, not their names."""
    import yaml

    from serve_apps.cli import logical_gpus_needed, main

    args = {"storage_url": str(tmp_path), "models": {"studio-look": {"variant": "flux-2-klein-9b-kv", "num_gpus": 0.5}}}
    assert logical_gpus_needed([{"args": args}]) == 1
    config = tmp_path / "serve_config.yaml"
    config.write_text(yaml.safe_dump({"applications": [{"name": "flux", "args": args}]}))
    main(["--config", str(config), "plan", "--gpus", "1x24GB"])
    out = capsys.readouterr().out
    assert "studio-look transformer" in out and "qwen3-8b text encoder" in out  # the 9B-KV spec's parts


@pytest.mark.parametrize("model", NEW_VARIANTS)
def test_each_new_variant_builds_at_an_emulated_size(model):
    """`emulated:tiny` (the benches' size) gives Base and KV the transformer of the distilled variant of their size:
    before, only the two distilled names had an emulated shape and the others failed with a KeyError."""
    spec = get_variant(model)
    denoiser = Denoiser(spec, weights="emulated:tiny", reference_images=no_references)
    nine = model.endswith(("9b", "9b-kv"))
    distilled = Denoiser("flux-2-klein-9b" if nine else "flux-2-klein-4b", weights="emulated:tiny")
    assert type(denoiser.pipeline).__name__ == spec.pipeline_class
    shape = ("num_layers", "num_single_layers", "num_attention_heads", "attention_head_dim")
    assert [denoiser.pipeline.transformer.config[key] for key in shape] == [
        distilled.pipeline.transformer.config[key] for key in shape
    ]
