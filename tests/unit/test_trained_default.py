"""The shipped offline default draws what it is asked, and its trainers run end to end."""

import io
import json
import random

import numpy as np
import pytest
from diffusers import Flux2KleinPipeline
from PIL import Image

from bench.shapes_quality import generate
from deployments.contracts import GenerationParams, ReferenceImage
from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
from deployments.weights import TRAINED_CHECKPOINT
from serve_apps.config import InputArgs
from serve_apps.jobs.inputs import decode_image
from serve_apps.jobs.references import as_reference
from training.shapes_edits import baseline_adherence, edit_adherence, held_out_edits
from training.shapes_model import TrainingConfig, train
from training.shapes_multitask import MultitaskConfig
from training.shapes_multitask import train as train_multitask
from training.shapes_scoring import edit_images, edit_sources, load, text_to_image_images, text_to_image_scores
from training.shapes_world import adherence, draw, held_out_scenes

# Edit floors for a third of the validation edits at one seed (one edit moves a rate by 0.0625): the
# recorded validation figures at 4 seeds (flux_serve.json held_out_edit_scores: joint EN 0.844, RU 0.844;
# IoU 0.821, 0.824) less room for one seed, and above what doing nothing scores (held_out_edit_baselines:
# joint 0.000 for the copy and the blank). IoU is no floor on its own: the copy's is 0.876.
EDIT_FLOORS = {"joint": 0.6, "iou": 0.6}


def meets_edit_floors(scores: dict[str, float]) -> bool:
    return all(scores[key] >= floor for key, floor in EDIT_FLOORS.items())


@pytest.fixture(scope="module")
def trained_workers():
    return TextEncoder("flux-2-klein-4b", weights="emulated"), Denoiser("flux-2-klein-4b", weights="emulated")


def test_trained_default_follows_held_out_prompts(trained_workers):
    """Looser floors than the README's figures, on half the held-out scenes (colour reads 0.958 here)."""
    scenes = held_out_scenes()[::2]
    scores = adherence(scenes, generate(*trained_workers, scenes, seeds=2))
    assert scores["colour"] >= 0.85 and scores["background"] >= 0.85
    assert scores["shape"] >= 0.7 and scores["all"] >= 0.6


def test_trained_default_reads_russian_prompts():
    """Half the held-out scenes captioned in Russian ("красный круг на синем фоне"), 2 seeds."""
    pipeline, settings = load(TRAINED_CHECKPOINT)
    scores = text_to_image_scores(pipeline, settings, held_out_scenes()[::2], 2, "ru")
    assert scores["colour"] >= 0.85 and scores["background"] >= 0.85
    assert scores["shape"] >= 0.7 and scores["all"] >= 0.6


def test_scoring_seeds_can_start_past_zero():
    """`--first-seed 100` scores other samples of the same scenes: image i uses seed first_seed + i."""
    pipeline, settings = load(TRAINED_CHECKPOINT)
    fast, scene = {**settings, "default_steps": 2}, held_out_scenes()[:1]
    first_two = [np.asarray(image, dtype=np.int16) for image in text_to_image_images(pipeline, fast, scene, 2)[0]]
    second = np.asarray(text_to_image_images(pipeline, fast, scene, 1, first_seed=1)[0][0], dtype=np.int16)
    assert np.abs(second - first_two[1]).max() <= 2 < np.abs(second - first_two[0]).max()


def stored_sources(edits) -> tuple[list[ReferenceImage], dict[str, bytes]]:
    """The held-out edits' source drawings through the service's own input path (decoded, stored as PNG
    named by its sha256), and the stored files by name, as the replica loads them."""
    decoded = []
    for source, _expected in edit_sources(edits):
        buffer = io.BytesIO()
        source.save(buffer, format="PNG")
        decoded.append(decode_image(buffer.getvalue(), "input_image", InputArgs().max_pixels))
    return [as_reference(image) for image in decoded], {image.name: image.png for image in decoded}


@pytest.mark.parametrize("language", ["en", "ru"])
def test_trained_default_edits_held_out_pairs_through_the_serving_workers(trained_workers, language):
    """A third of the held-out edits, one seed, at the checkpoint's own edit guidance; the same floors fail
    the copy and the blank baselines on these edits."""
    encoder = trained_workers[0]
    edits = held_out_edits()[::3]
    references, files = stored_sources(edits)
    denoiser = Denoiser(
        "flux-2-klein-4b", weights="emulated", reference_images=lambda ref: Image.open(io.BytesIO(files[ref.name]))
    )
    jobs = [
        encoder.job(
            GenerationParams.with_defaults(
                denoiser.defaults, edit.instruction(language), references=(reference,), seed=0, output_format="png"
            )
        )
        for edit, reference in zip(edits, references)
    ]
    assert not jobs[0].params.uses_cfg, "the checkpoint edits at its default_edit_guidance (1.0)"
    results = [[Image.open(io.BytesIO(data)).convert("RGB") for data in r.images] for r in denoiser.generate(jobs)]
    pairs = edit_sources(edits)
    expected = [target for _source, target in pairs]
    scores = edit_adherence(edits, results, expected)
    assert meets_edit_floors(scores), scores
    for name, baseline in baseline_adherence(edits, [source for source, _ in pairs], expected).items():
        assert not meets_edit_floors(baseline), (name, baseline)


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


def test_multitask_trainer_runs_end_to_end_on_a_tiny_budget(tmp_path):
    """Edit steps through the reference-token path; the saved checkpoint reads the new Russian words as
    one token each and edits at 7:4 through the pipeline's own `image=`."""
    config = MultitaskConfig(items_per_task=16, steps=4, batch=2, edit_share=0.5, save_every=2, eval_seeds=0)
    settings = train_multitask(TRAINED_CHECKPOINT, tmp_path, config)
    assert settings["training"]["steps_done"] == 4
    pipeline, saved = load(tmp_path)
    assert len(pipeline.tokenizer) <= pipeline.text_encoder.get_input_embeddings().num_embeddings
    for word in ("сделай", " жёлтым", " желтым", " треугольник", " квадрат", " фоне"):
        assert len(pipeline.tokenizer(word).input_ids) == 1, word
    source = draw(held_out_scenes()[0], random.Random(0)).resize((112, 64))
    result = edit_images(pipeline, {**saved, "default_steps": 2}, held_out_edits()[:1], [source], 1, "ru")[0][0]
    assert result.size == (112, 64)
