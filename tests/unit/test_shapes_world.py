"""The shapes-world scorer, validated on ground-truth drawings."""

import random

from PIL import ImageFilter

from training.shapes_world import adherence, all_scenes, draw, held_out_scenes, training_scenes


def test_scorer_reads_every_ground_truth_drawing_even_slightly_blurred():
    rng = random.Random(0)
    scenes = all_scenes()
    drawings = [[draw(scene, rng) for _ in range(2)] for scene in scenes]
    assert adherence(scenes, drawings) == {"colour": 1.0, "background": 1.0, "shape": 1.0, "all": 1.0}
    blurred = [[image.filter(ImageFilter.GaussianBlur(1)) for image in images] for images in drawings]
    assert adherence(scenes, blurred)["all"] == 1.0


def test_scorer_is_not_fooled_by_the_wrong_scene():
    rng = random.Random(1)
    scenes = all_scenes()
    shifted = [[draw(scenes[(index + 1) % len(scenes)], rng)] for index in range(len(scenes))]
    assert adherence(scenes, shifted)["all"] < 0.1


def test_held_out_combinations_are_never_trained_on():
    held_out = set(held_out_scenes())
    assert held_out and not held_out & set(training_scenes())
    assert {scene.shape for scene in held_out} == {scene.shape for scene in training_scenes()}
    trained = training_scenes()
    for scene in held_out:  # only the triple is new: each of its pairs is seen with something else
        assert any((t.colour, t.background) == (scene.colour, scene.background) for t in trained)
        assert any((t.shape, t.colour) == (scene.shape, scene.colour) for t in trained)
        assert any((t.shape, t.background) == (scene.shape, scene.background) for t in trained)
