"""Model workers on the tiny emulated checkpoints, in-process, no Ray."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deployments.contracts import DenoiseJob, GenerationParams, InvalidRequestError
from deployments.denoiser import Denoiser
from deployments.emulation import build_checkpoint
from deployments.progress import Progress
from deployments.registry import VARIANTS, UnknownModelError, get_variant
from deployments.weights import describe_weights

MODEL = "flux-2-klein-4b"
TINY_DEFAULTS = describe_weights(get_variant(MODEL), "emulated:tiny").defaults


def pixels(image_bytes: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB")).astype(np.int16)


def make_request(embedding, job_id: str | None = None, **overrides) -> DenoiseJob:
    fields = {"width": 64, "height": 64, "seed": 7, "output_format": "png"}
    fields.update(overrides)
    return DenoiseJob(GenerationParams.with_defaults(TINY_DEFAULTS, "a prompt", **fields), embedding, job_id=job_id)


@pytest.mark.parametrize(
    ("width", "height", "output_format"),
    [(64, 64, "png"), (256, 144, "jpeg"), (144, 256, "webp"), (128, 96, "png")],
)
def test_sizes_and_formats(denoiser, prompt, width, height, output_format):
    [result] = denoiser.generate([make_request(prompt, width=width, height=height, output_format=output_format)])
    image = Image.open(io.BytesIO(result.images[0]))
    assert image.size == (width, height)
    assert image.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[output_format]
    assert result.params.steps == get_variant(MODEL).default_steps == 4
    assert result.timings_s["denoise"] > 0 and result.timings_s["decode"] > 0


def test_twelve_images_in_one_request_share_one_pass(denoiser, prompt):
    [result] = denoiser.generate([make_request(prompt, num_images=12)])
    assert len(result.images) == 12
    assert result.batch_images == 12
    assert len({hashlib.sha256(b).hexdigest() for b in result.images}) == 12


def test_same_seed_same_image_other_seed_other_image(denoiser, prompt):
    first, again, other = denoiser.generate(
        [make_request(prompt, seed=3), make_request(prompt, seed=3), make_request(prompt, seed=4)]
    )
    assert first.images == again.images
    assert first.images != other.images


def test_drawn_seed_is_reported_and_reproduces(denoiser, prompt):
    [drawn] = denoiser.generate([make_request(prompt, seed=None)])
    [replayed] = denoiser.generate([make_request(prompt, seed=drawn.params.seed)])
    assert np.abs(pixels(drawn.images[0]) - pixels(replayed.images[0])).max() <= 1


def test_batched_equals_alone(denoiser, prompts):
    [alone] = denoiser.generate([make_request(prompts[1], seed=11, num_images=2)])
    batch = denoiser.generate(
        [make_request(prompts[0], seed=5, num_images=3), make_request(prompts[1], seed=11, num_images=2)]
    )
    assert batch[1].batch_requests == 2 and batch[1].batch_images == 5
    for lone, batched in zip(alone.images, batch[1].images):
        assert np.abs(pixels(lone) - pixels(batched)).max() <= 2


def test_incompatible_requests_run_in_separate_passes(denoiser, prompt):
    small, large, longer = denoiser.generate(
        [make_request(prompt), make_request(prompt, width=128), make_request(prompt, steps=2)]
    )
    assert small.batch_images == large.batch_images == longer.batch_images == 1
    assert longer.params.steps == 2


class Recorder:
    """A step observer that remembers every progress and cancels the jobs `cancel(job_id, seen)` names."""

    def __init__(self, cancel=lambda _job_id, _seen: False):
        self.seen: list[Progress] = []
        self.cancel = cancel

    def on_step(self, progress: Progress) -> None:
        self.seen.append(progress)

    def cancel_requested(self, job_id: str) -> bool:
        return self.cancel(job_id, self.seen)

    def steps(self) -> list[tuple[str, int, int]]:
        return [(p.job_id, p.step, p.of) for p in self.seen]


def test_images_per_forward_cap_splits_passes(denoiser_factory, prompt):
    capped = denoiser_factory(max_images_per_forward=4)
    observer = Recorder()
    results = capped.generate(
        [make_request(prompt, num_images=6), make_request(prompt, seed=100, num_images=2)], observer=observer
    )
    assert [len(r.images) for r in results] == [6, 2]
    assert max(r.batch_images for r in results) == 4
    assert ("request-0", 8, 8) in observer.steps(), "a request split over two passes reports steps over both"


def test_progress_counts_across_passes_with_a_falling_eta(denoiser_factory, prompt):
    capped = denoiser_factory(max_images_per_forward=2)
    observer = Recorder()
    capped.generate([make_request(prompt, num_images=3, job_id="a" * 32)], observer=observer)
    assert observer.steps() == [("a" * 32, step, 8) for step in range(1, 9)]
    etas = [p.eta_s for p in observer.seen]
    assert all(eta is not None and eta >= 0 for eta in etas) and etas[-1] == 0.0
    per_step_s = [p.eta_s / (p.of - p.step) for p in observer.seen[:-1]]
    assert all(seconds > 0 for seconds in per_step_s), "the ETA is the steps left times a measured step time"
    assert etas[0] > etas[-1], "and falls to zero (not compared step by step: a loaded machine's steps vary)"
    assert all(p.updated_at > 0 and (p.preview is None or p.preview_step <= p.step) for p in observer.seen)


def test_progress_and_cancel_between_steps(denoiser, prompt):
    observer = Recorder(cancel=lambda _job_id, seen: len(seen) >= 2)
    [running] = denoiser.generate([make_request(prompt)], observer=observer)
    assert running.cancelled and running.images == []
    assert observer.steps() == [("request-0", 1, 4), ("request-0", 2, 4)], "stopped at the step that saw the cancel"


def test_cancelled_request_in_a_batch_leaves_the_others(denoiser, prompts):
    kept, dropped = denoiser.generate(
        [make_request(prompts[0]), make_request(prompts[1])],
        observer=Recorder(cancel=lambda job_id, _seen: job_id == "request-1"),
    )
    assert not kept.cancelled and len(kept.images) == 1
    assert dropped.cancelled and dropped.images == []


def test_an_observer_changes_no_pixel(denoiser, prompts):
    jobs = [make_request(prompts[0], num_images=2), make_request(prompts[1], seed=9)]
    plain = denoiser.generate(jobs)
    observed = denoiser.generate(jobs, observer=Recorder())
    assert [r.images for r in plain] == [r.images for r in observed]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"width": 100}, "width"),
        ({"width": 48}, "width"),
        ({"width": 4096, "height": 2048}, "width"),  # over 4 megapixels in all
        ({"steps": 0}, "steps"),
        ({"steps": 1000}, "steps"),
        ({"num_images": 0}, "num_images"),
        ({"num_images": 13}, "num_images"),
        ({"output_format": "gif"}, "output_format"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_input_names_the_field_and_range(prompt, overrides, field):
    with pytest.raises(InvalidRequestError) as error:
        make_request(prompt, **overrides)
    assert error.value.field == field
    assert str(overrides[field]).strip("'") in str(error.value)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UnknownModelError, match="flux-2-klein-4b, flux-2-klein-9b"):
        Denoiser("flux-3-giant")


def test_embeddings_of_the_other_model_are_refused(denoiser, encoder_9b):
    [foreign] = encoder_9b.encode(["a red circle"])
    with pytest.raises(InvalidRequestError, match="qwen3-8b.*qwen3-4b"):
        denoiser.generate([make_request(foreign)])


def test_encoder_cache_hit_does_not_call_the_model(encoder, monkeypatch):
    calls: list[list[str]] = []
    original = encoder.pipeline.encode_prompt

    def counting_encode_prompt(prompt, **kwargs):
        calls.append(list(prompt))
        return original(prompt=prompt, **kwargs)

    monkeypatch.setattr(encoder.pipeline, "encode_prompt", counting_encode_prompt)
    first = encoder.encode(["a cached prompt", "another one"])
    second = encoder.encode(["another one", "a cached prompt", "a new one"])
    assert calls == [["a cached prompt", "another one"], ["a new one"]]
    assert second[1].embeds is first[0].embeds
    assert first[0].embeds.device.type == "cpu" and first[0].embeds.is_contiguous()


def test_encoder_embedding_shape_matches_the_denoiser(encoder, denoiser):
    [embedding] = encoder.encode(["shape check"])
    assert embedding.embeds.shape == (
        encoder.weights.max_sequence_length,
        denoiser.pipeline.transformer.config.joint_attention_dim,
    )


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_builder_is_deterministic(tmp_path):
    variant = get_variant(MODEL)
    first = tree_digest(build_checkpoint(variant, "tiny", tmp_path / "a"))
    second = tree_digest(build_checkpoint(variant, "tiny", tmp_path / "b"))
    assert first == second
    assert {"transformer/config.json", "vae/config.json", "tokenizer/tokenizer.json"} <= set(first)


def test_nine_b_emulation_is_wider_and_deeper_than_four_b(denoiser, denoiser_9b):
    small, large = denoiser.pipeline.transformer.config, denoiser_9b.pipeline.transformer.config
    assert large.joint_attention_dim > small.joint_attention_dim
    assert large.num_attention_heads * large.attention_head_dim > small.num_attention_heads * small.attention_head_dim
    assert large.num_layers + large.num_single_layers > small.num_layers + small.num_single_layers
    assert denoiser.pixels_per_token == 16, "8x VAE and 2x2 patches, as in the real model"


def test_registry_carries_the_real_facts():
    four, nine = VARIANTS["flux-2-klein-4b"], VARIANTS["flux-2-klein-9b"]
    assert (four.transformer.hidden_size, four.transformer.num_double_blocks, four.transformer.num_single_blocks) == (
        3072,
        5,
        20,
    )
    assert (nine.transformer.hidden_size, nine.transformer.num_double_blocks, nine.transformer.num_single_blocks) == (
        4096,
        8,
        24,
    )
    assert four.text_encoder.embedding_dim == 7680 and nine.text_encoder.embedding_dim == 12288
    assert four.license == "Apache-2.0" and not nine.commercial_use
    assert four.default_steps == nine.default_steps == 4
