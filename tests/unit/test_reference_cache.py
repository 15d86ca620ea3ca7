"""A repeated reference costs nothing (issue 28): prepared references kept across jobs, bounded in bytes,
keyed by content, variant and size, and the images byte-identical with the cache on or off."""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from deployments.contracts import AdapterRef, DenoiseJob, GenerationParams, ReferenceImage
from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
from deployments.reference_cache import LatentsKey, PixelsKey, PreparedReferences, tensor_bytes
from deployments.registry import get_variant
from deployments.weights import describe_weights

MODEL = "flux-2-klein-4b"
TINY_DEFAULTS = describe_weights(get_variant(MODEL), "emulated:tiny").defaults


def stored(color, size=(96, 64), mode="RGB") -> tuple[ReferenceImage, bytes]:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    return ReferenceImage(digest, f"{digest}.png", *size), buffer.getvalue()


@pytest.fixture(scope="module")
def references():
    """Two references and a mask, and a loader reading them from a dict (as the replica does from storage)."""
    red, blue, mask = stored((200, 30, 30)), stored((30, 30, 200), size=(64, 64)), stored(255, size=(64, 64), mode="L")
    files = {ref.name: data for ref, data in (red, blue, mask)}
    return red[0], blue[0], mask[0], lambda reference: Image.open(io.BytesIO(files[reference.name]))


def edit(prompt, **fields) -> DenoiseJob:
    fields = {"width": 64, "height": 64, "seed": 3, "output_format": "png", **fields}
    return DenoiseJob(GenerationParams.with_defaults(TINY_DEFAULTS, "make it blue", **fields), prompt)


def run(denoiser, job):
    [result] = denoiser.generate([job])
    return result


def test_the_second_job_with_a_reference_finds_it_prepared(denoiser_factory, prompt, references):
    red, _blue, _mask, load = references
    denoiser = denoiser_factory(reference_images=load)
    first, second = run(denoiser, edit(prompt, references=(red,))), run(denoiser, edit(prompt, references=(red,)))
    assert (first.reference_cache, second.reference_cache) == ("miss", "hit")
    assert first.timings_s["reference_prepare"] > 0 and second.timings_s["reference_prepare"] >= 0
    plain = run(denoiser, edit(prompt))
    assert plain.reference_cache is None and "reference_prepare" not in plain.timings_s


@pytest.mark.parametrize("masked", [False, True], ids=["edit", "masked edit"])
def test_images_are_byte_identical_with_the_cache_on_or_off(denoiser_factory, prompt, references, masked):
    red, blue, mask, load = references
    fields = {"references": (red, blue), "num_images": 2}
    if masked:
        fields |= {"mask": mask, "width": 96, "height": 64}
    cached, uncached = (
        denoiser_factory(reference_images=load),
        denoiser_factory(reference_images=load, reference_cache_bytes=0),
    )
    without = run(uncached, edit(prompt, **fields))
    runs = [run(cached, edit(prompt, **fields)) for _ in range(3)]  # a miss, then two hits: nothing kept is altered
    assert [result.reference_cache for result in runs] == ["miss", "hit", "hit"]
    assert all(result.images == without.images for result in runs)
    assert run(uncached, edit(prompt, **fields)).reference_cache == "miss", "reference_cache_bytes 0 keeps nothing"


def test_a_different_output_size_prepares_the_masked_source_again(denoiser_factory, prompt, references):
    red, _blue, mask, load = references
    denoiser = denoiser_factory(reference_images=load)
    assert run(denoiser, edit(prompt, references=(red,), mask=mask, width=96, height=64)).reference_cache == "miss"
    assert run(denoiser, edit(prompt, references=(red,), mask=mask, width=64, height=64)).reference_cache == "miss"
    assert run(denoiser, edit(prompt, references=(red,), mask=mask, width=96, height=64)).reference_cache == "hit"


class FakePipeline:
    """The two methods the cache wraps, counting their calls: 3x16x16 float32 pixels (3 KiB), latents half that."""

    def __init__(self):
        self.calls = {"preprocess": 0, "encode": 0}
        self.image_processor = SimpleNamespace(preprocess=self.preprocess)

    def preprocess(self, image, height=None, width=None, resize_mode="default", crops_coords=None):
        self.calls["preprocess"] += 1
        return torch.full((1, 3, height, width), float(image))

    def _encode_vae_image(self, image, generator):
        self.calls["encode"] += 1
        return image[:, :, ::2, :].clone()


def prepare(cache: PreparedReferences, pipeline: FakePipeline, sha256s: list[str], size: int = 16):
    cache.expect(sha256s)
    for number, _ in enumerate(sha256s):
        pixels = pipeline.image_processor.preprocess(number, height=size, width=size, resize_mode="crop")
        pipeline._encode_vae_image(image=pixels, generator=None)
    return cache.finish()


def test_the_cache_is_bounded_in_bytes_and_lets_the_least_recently_used_go():
    pipeline, one_reference_bytes = FakePipeline(), (3 + 1.5) * 16 * 16 * 4
    cache = PreparedReferences("flux-2-klein-4b", capacity_bytes=int(2 * one_reference_bytes))
    cache.install(pipeline)
    assert not prepare(cache, pipeline, ["a"]).hit
    assert not prepare(cache, pipeline, ["b"]).hit
    assert prepare(cache, pipeline, ["a"]).hit  # a is now the most recently used
    assert not prepare(cache, pipeline, ["c"]).hit  # b goes
    assert prepare(cache, pipeline, ["a"]).hit and not prepare(cache, pipeline, ["b"]).hit
    assert sum(tensor_bytes(tensor) for tensor in cache.tensors.values()) <= cache.tensors.maxsize
    assert pipeline.calls == {"preprocess": 4, "encode": 4}, "a hit neither preprocesses nor encodes"


def test_the_key_holds_variant_size_dtype_and_device():
    pipeline = FakePipeline()
    cache = PreparedReferences("flux-2-klein-9b")
    cache.install(pipeline)
    prepare(cache, pipeline, ["a"], size=16)
    assert not prepare(cache, pipeline, ["a"], size=32).hit, "another size is another preparation"
    assert prepare(cache, pipeline, ["a"], size=16).hit
    pixels = PixelsKey("a", "flux-2-klein-9b", 16, 16, "crop", None)
    assert pixels in cache.tensors and LatentsKey(pixels, (1, 3, 16, 16), "torch.float32", "cpu") in cache.tensors


def test_a_pipeline_preparing_other_images_than_it_was_given_fails_loudly():
    pipeline = FakePipeline()
    cache = PreparedReferences("flux-2-klein-4b")
    cache.install(pipeline)
    cache.expect(["a"])
    pipeline.image_processor.preprocess(0, height=16, width=16)
    with pytest.raises(RuntimeError, match="no longer matches"):
        pipeline.image_processor.preprocess(1, height=16, width=16)
    cache.expect(["a"])
    with pytest.raises(RuntimeError, match="encoded 0 images but was given 1"):
        cache.finish()
    assert cache.finish() is None and pipeline.image_processor.preprocess(5, height=2, width=2).shape == (1, 3, 2, 2)


def test_the_kv_variant_keeps_its_references_prepared_and_their_keys_and_values_across_jobs(references):
    """Flux2KleinKVPipeline prepares `image=` as klein does, and the references' keys and values of its first step
    are kept (deployments/kv_reuse.py): the second job's first step runs without the reference tokens, and its
    images are byte-identical to the first job's and to those of a denoiser that keeps nothing."""
    red, blue, _mask, load = references
    cached = Denoiser("flux-2-klein-9b-kv", weights="emulated", reference_images=load)
    uncached = Denoiser("flux-2-klein-9b-kv", weights="emulated", reference_images=load, reference_cache_bytes=0)
    params = GenerationParams.with_defaults(
        cached.defaults, "make it blue", width=64, height=64, seed=3, steps=2, output_format="png", references=(red,)
    )
    job = TextEncoder("flux-2-klein-9b-kv", weights="emulated").job(params)
    runs = [run(cached, job), run(cached, job)]
    assert [result.reference_cache for result in runs] == ["miss", "hit"]
    assert cached.reference_kv.hit is True and len(cached.reference_kv.held) == 1
    assert runs[0].images == runs[1].images == run(uncached, job).images
    assert uncached.reference_kv.hit is None, "capacity 0 keeps nothing"
    other = TextEncoder("flux-2-klein-9b-kv", weights="emulated").job(replace(params, references=(blue,)))
    assert run(cached, other).reference_cache == "miss" and cached.reference_kv.hit is False
    assert len(cached.reference_kv.held) == 2


def test_a_request_with_references_and_no_adapters_is_routed_by_its_first_reference(references):
    red, blue, _mask, _load = references
    with_references = GenerationParams.with_defaults(TINY_DEFAULTS, "x", references=(red, blue))
    with_both = GenerationParams.with_defaults(
        TINY_DEFAULTS, "x", references=(red,), adapters=(AdapterRef("ink", "ink.safetensors"),)
    )
    assert with_references.replica_affinity == f"ref:{red.sha256}"
    assert with_both.replica_affinity == "ink", "an adapter set costs more to load: it routes"
    assert GenerationParams.with_defaults(TINY_DEFAULTS, "x").replica_affinity == ""
