"""Editing in-process, no Ray: references and masks through diffusers' klein pipelines on the tiny model,
the batch grouping, the size rules, the submit quote and the safety gate."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from deployments.contracts import DenoiseJob, GenerationDefaults, GenerationParams, InvalidRequestError, ReferenceImage
from deployments.costs import GPUS, KLEIN_4B_COST
from deployments.registry import get_variant
from deployments.weights import describe_weights
from serve_apps.api.protocol import GenerateRequest
from serve_apps.config import PricingArgs
from serve_apps.jobs.pricing import megapixels, quote_credits
from serve_apps.security import safety

MODEL = "flux-2-klein-4b"
TINY_DEFAULTS = describe_weights(get_variant(MODEL), "emulated:tiny").defaults


def stored(color, size=(96, 64), mode="RGB") -> tuple[ReferenceImage, bytes]:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    return ReferenceImage(digest, f"{digest}.png", *size), data


@pytest.fixture
def references():
    """Two references and a mask, and a denoiser that loads them from a dict (as the replica does from storage)."""
    red, blue, mask = stored((200, 30, 30)), stored((30, 30, 200), size=(64, 64)), stored(255, size=(64, 64), mode="L")
    files = {ref.name: data for ref, data in (red, blue, mask)}
    loads = []

    def load(reference: ReferenceImage) -> Image.Image:
        loads.append(reference.name)
        return Image.open(io.BytesIO(files[reference.name]))

    return red[0], blue[0], mask[0], load, loads


def edit(prompt, **fields) -> DenoiseJob:
    fields = {"width": 64, "height": 64, "seed": 3, "output_format": "png", **fields}
    return DenoiseJob(GenerationParams.with_defaults(TINY_DEFAULTS, "make it blue", **fields), prompt)


def test_references_and_mask_run_through_the_pipelines_and_load_once(denoiser_factory, prompt, references):
    red, blue, mask, load, loads = references
    denoiser = denoiser_factory(reference_images=load)
    jobs = [
        edit(prompt, references=(red,)),
        edit(prompt, references=(red, blue), num_images=2),
        edit(prompt, references=(red,), mask=mask, width=96, height=64),
        edit(prompt),
    ]
    results = denoiser.generate(jobs)
    sizes = [[Image.open(io.BytesIO(image)).size for image in result.images] for result in results]
    assert sizes == [[(64, 64)], [(64, 64), (64, 64)], [(96, 64)], [(64, 64)]]
    assert sorted(loads) == sorted({red.name, blue.name, mask.name}), "each image decoded once, then cached"
    assert all(result.batch_requests == 1 for result in results), "different references never share a pass"


def test_same_references_share_a_pass_and_the_output_is_deterministic(denoiser_factory, prompt, references):
    red, _blue, _mask, load, _loads = references
    denoiser = denoiser_factory(reference_images=load)
    together = denoiser.generate([edit(prompt, references=(red,)), edit(prompt, references=(red,), seed=4)])
    alone = denoiser.generate([edit(prompt, references=(red,))])
    assert together[0].batch_requests == 2
    batched, single = (
        np.asarray(Image.open(io.BytesIO(result[0].images[0])), dtype=np.int16) for result in (together, alone)
    )
    assert np.abs(batched - single).max() <= 2, "a batched pass may round differently, never draw differently"


def test_mask_limits():
    ref, _ = stored((1, 2, 3))
    with pytest.raises(InvalidRequestError, match="input_image"):
        GenerationParams.with_defaults(TINY_DEFAULTS, "x", mask=ref)
    with pytest.raises(InvalidRequestError, match="at most one more"):
        GenerationParams.with_defaults(TINY_DEFAULTS, "x", references=(ref, ref, ref), mask=ref)


# -- sizes: BFL's limit and the first reference's shape ----------------------------------------

DEFAULTS = GenerationDefaults(steps=4, guidance=1.0, distilled=True, width=1024, height=1024)


def test_size_limit_is_four_megapixels_in_all():
    assert GenerateRequest(prompt="x", width=4096, height=1024).to_params(DEFAULTS).width == 4096
    with pytest.raises(ValueError, match="at most 4 megapixels.*e.g. 2896x1440"):
        GenerateRequest(prompt="x", width=4096, height=2048)
    with pytest.raises(InvalidRequestError, match="megapixels"):
        GenerateRequest(prompt="x", width=8192).to_params(DEFAULTS)


def test_without_a_size_the_output_takes_the_first_reference_shape_at_the_default_area():
    wide = ReferenceImage("a" * 64, "a" * 64 + ".png", 1600, 900)
    params = GenerateRequest(prompt="x", input_image="upload_" + "0" * 32).to_params(DEFAULTS, references=(wide,))
    assert (params.width, params.height) == (1360, 768) and params.references == (wide,)
    given = GenerateRequest(prompt="x", width=512, height=512).to_params(DEFAULTS, references=(wide,))
    assert (given.width, given.height) == (512, 512)


def test_mask_needs_an_input_image():
    with pytest.raises(ValueError, match="mask needs input_image"):
        GenerateRequest(prompt="x", mask="upload_" + "0" * 32)


# -- the quote at submit ------------------------------------------------------------------------


def test_quote_counts_outputs_references_steps_and_cfg():
    pricing = PricingArgs(gpu_type="h100")
    plain = GenerationParams(prompt="x", width=1024, height=1024, steps=4, guidance=None, seed=1)
    big_ref = ReferenceImage("b" * 64, "b" * 64 + ".png", 2048, 2048)
    edit_params = GenerationParams(**{**plain.__dict__, "references": (big_ref,)})
    assert megapixels(plain) == (0.0, 1.0) and megapixels(edit_params) == (1.0, 1.0), "references count at 1 MP"
    base = quote_credits(MODEL, plain, pricing)
    seconds_per_mp_step, h100_usd_per_hour = KLEIN_4B_COST.gpu_s_per_megapixel_step, GPUS["h100"].usd_per_hour
    assert base == pytest.approx(seconds_per_mp_step * 4 * h100_usd_per_hour / 3600 * 100, rel=1e-3)
    assert quote_credits(MODEL, edit_params, pricing) == pytest.approx(2 * base, rel=1e-3)
    assert quote_credits("unpriced-model", plain, pricing) is None


# -- the safety gate ----------------------------------------------------------------------------


class FlagsEverything:
    def unsafe_score(self, image: Image.Image) -> float:
        return 1.0


class HalfSure:
    def unsafe_score(self, image: Image.Image) -> float:
        return 0.5


def test_safety_gate_follows_safety_tolerance():
    image = Image.new("RGB", (8, 8))
    assert "flagged" in safety.refusal(FlagsEverything(), [image], 6, "output image")
    assert safety.refusal(HalfSure(), [image], 2, "input image") is not None  # 0.5 >= 0.4
    assert safety.refusal(HalfSure(), [image], 4, "input image") is None  # 0.5 < 0.6
    assert safety.refusal(None, [image], 0, "input image") is None
    assert type(safety.load_checker("tests.unit.test_editing:FlagsEverything")).__name__ == "FlagsEverything"
