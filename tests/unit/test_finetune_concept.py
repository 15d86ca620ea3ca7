"""A finetune teaches the offline model a shape it never drew, and it travels to colour pairs never trained.

The proof of issue 27 (training/finetune_proof.py): 12 pluses in 12 colour pairs, captioned "a red TOK on a
green background", trained through FinetuneWorker with the offline model's default settings; asked for the 14
colour pairs of the test split (never trained with the plus, never read by any choice: neither the recipe's,
made on validation_pairs(), nor the strength sweep's), 4 seeds each, the served model with the adapter at its default strength must
draw the plus in at least half the images (the base model: none) with the asked colour and background in at
least 0.8. This test trains for real: about SLOW_MINUTES minutes on a loaded 2-core CPU (bench/finetune.py
prints the figures).
"""

from __future__ import annotations

import random

import pytest
import torch
from PIL import ImageFilter

from deployments.finetune import STRENGTHS
from training.finetune_data import decode_image, offline_caption
from training.finetune_proof import ServedModel, baseline_scores, plus_scenes, proof_examples, proof_params
from training.finetune_worker import FinetuneWorker
from training.shapes_concepts import (
    colour_pairs,
    concept_adherence,
    draw_scene,
    judge_pairs,
    training_pairs,
    unseen_pairs,
    validation_pairs,
)
from training.shapes_world import adherence, all_scenes, draw

SLOW_MINUTES = 6
MIN_SHAPE_RATE, MIN_COLOURS_RATE = 0.5, 0.8


def test_the_plus_reader_reads_every_drawing_and_the_known_shapes_as_before():
    rng = random.Random(0)
    scenes = all_scenes()
    known = [[draw(scene, rng) for _ in range(2)] for scene in scenes]
    for images in (known, [[image.filter(ImageFilter.GaussianBlur(1)) for image in row] for row in known]):
        assert concept_adherence(scenes, images)["all"] == 1.0 and adherence(scenes, images)["all"] == 1.0
    pluses = plus_scenes(colour_pairs())
    drawn = [[draw_scene(scene, rng) for _ in range(2)] for scene in pluses]
    assert concept_adherence(pluses, drawn)["all"] == 1.0
    blurred = [[image.filter(ImageFilter.GaussianBlur(1.5)) for image in row] for row in drawn]
    assert concept_adherence(pluses, blurred)["all"] == 1.0


def test_the_split_trains_every_colour_in_both_roles_and_tests_pairs_no_choice_read():
    trained, tested, validation = set(training_pairs()), set(unseen_pairs()), set(validation_pairs())
    judged = set(judge_pairs(trained))
    assert len(trained) == 12 and len(tested) == 14 and len(validation) == 30
    assert not tested & (trained | validation | judged), "the test split is apart from every choice"
    assert judged <= validation and trained | tested | validation == set(colour_pairs())
    for colour, background in tested:
        assert colour in {c for c, _ in trained} and background in {b for _, b in trained}


def test_the_offline_captioner_writes_the_proof_captions_and_memorising_fails_the_bar():
    for example in proof_examples():
        assert offline_caption(decode_image(example.image_png, example.name), "TOK") == example.caption
    baselines = baseline_scores(unseen_pairs())
    assert baselines["drawn truth"]["all"] == 1.0
    assert baselines["nearest training image"]["colours"] < MIN_COLOURS_RATE, "copying a training image fails"
    assert baselines["blank"]["shape"] == 0.0


@pytest.fixture(scope="module")
def finetune():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core CPU one thread trains several times faster than two
    try:
        return list(FinetuneWorker("cpu").train(proof_params(), proof_examples()))[-1]
    finally:
        torch.set_num_threads(threads)


def test_a_default_finetune_draws_the_new_shape_in_colours_it_never_saw_it_in(finetune):
    assert finetune.default_strength in STRENGTHS
    scores = ServedModel(finetune.adapter, finetune.default_strength).scores(unseen_pairs(), 4)
    assert scores["shape"] >= MIN_SHAPE_RATE, scores
    assert scores["colours"] >= MIN_COLOURS_RATE, scores
    assert ServedModel().scores(unseen_pairs(), 4)["shape"] <= 0.05, "the base model does not draw it by itself"
    assert finetune.details["timings_s"]["total"] < 10 * 60
