"""The shapes-world scorer and its edits, validated on ground-truth drawings."""

import random

from PIL import ImageFilter

from training.shapes_edits import (
    ATTRIBUTES,
    baseline_adherence,
    draw_pair,
    edit_adherence,
    held_out_edits,
    mask_iou,
    training_edits,
)
from training.shapes_language import caption, instruction, plain_e
from training.shapes_world import (
    BUCKETS_PX,
    Scene,
    adherence,
    all_scenes,
    draw,
    held_out_scenes,
    place,
    render,
    training_scenes,
)


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


def test_scorer_reads_ground_truth_at_every_trained_aspect_ratio():
    rng = random.Random(2)
    scenes = all_scenes()
    for width_px, height_px in BUCKETS_PX:
        drawings = [[render(scene, place(rng, width_px, height_px), width_px, height_px)] for scene in scenes]
        assert adherence(scenes, drawings)["all"] == 1.0, (width_px, height_px)


def test_an_edit_changes_only_what_it_asks_and_keeps_the_place():
    rng = random.Random(3)
    edits = held_out_edits()
    pairs = [draw_pair(edit, rng) for edit in edits]
    perfect = edit_adherence(edits, [[target] for _, target in pairs], [target for _, target in pairs])
    assert perfect["asked"] == perfect["kept"] == perfect["joint"] == perfect["iou"] == 1.0
    unchanged = edit_adherence(edits, [[source] for source, _ in pairs], [target for _, target in pairs])
    assert unchanged["asked"] == unchanged["joint"] == 0.0 and unchanged["kept"] == 1.0
    for source, target in pairs[:16]:  # background edits: the shape's pixels sit where they did
        assert mask_iou(source, target) == 1.0


def test_held_out_edits_are_never_trained_on_but_their_parts_are():
    held_out, trained = held_out_edits(), training_edits()
    assert len(held_out) == 48 and not set(held_out) & set(trained)
    assert {edit.attribute for edit in held_out} == set(ATTRIBUTES)
    scenes = set(training_scenes())
    for edit in held_out:
        assert edit.source in scenes and edit.target in scenes  # held-out text-to-image triples stay unseen
        assert any(t.source == edit.source for t in trained)
        assert any(t.instruction("en") == edit.instruction("en") for t in trained)


def test_instructions_and_russian_captions_take_the_asked_forms():
    circle = Scene("circle", "red", "blue")
    assert caption(circle, "ru") == "красный круг на синем фоне"
    assert instruction(circle, "background", "yellow", "en") == "make the background yellow"
    assert instruction(circle, "colour", "green", "en") == "make the circle green"
    assert instruction(circle, "shape", "square", "en") == "turn the circle into a square"
    assert instruction(circle, "background", "yellow", "ru") == "сделай фон жёлтым"
    assert instruction(circle, "colour", "green", "ru") == "сделай круг зелёным"
    assert instruction(circle, "shape", "square", "ru") == "преврати круг в квадрат"
    assert plain_e("сделай круг зелёным") == "сделай круг зеленым"


def test_doing_nothing_keeps_everything_but_its_joint_rate_is_zero():
    """The copy baseline is the source unchanged: every untouched attribute kept and the shape where it
    was (IoU 1 except class edits), yet nothing asked is done. The blank has the source's background alone."""
    edits = held_out_edits()
    pairs = [draw_pair(edit, random.Random(index)) for index, edit in enumerate(edits)]
    baselines = baseline_adherence(edits, [source for source, _ in pairs], [target for _, target in pairs])
    copy, blank = baselines["copy"], baselines["blank"]
    assert copy["kept"] == 1.0 and copy["asked"] == copy["joint"] == 0.0
    assert copy["background/iou"] == copy["colour/iou"] == 1.0 > copy["shape/iou"] > 0.3
    assert all(value == 0.0 for value in blank.values()), blank
