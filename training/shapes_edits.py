"""Paired edits in the shapes world: a source scene, one asked change, the target scene.

An edit changes exactly one attribute (the background colour, the shape's colour, or the
shape class) and keeps the rest, position and size included, so the scorer can check the
asked attribute, the untouched ones and where the shape sits. Edits only join scenes of
the text-to-image training split, so the held-out text-to-image triples stay unseen.

Doing nothing scores well on two of those checks: the source returned unchanged keeps every
untouched attribute and sits where the shape was. So every figure comes with what a copy and
a blank canvas score on the same edits, and the figure a floor is set on is the joint rate:
the share of results with the asked attribute right and the others kept, which a copy fails.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from training.shapes_language import instruction
from training.shapes_world import (
    COLOURS,
    IMAGE_SIDE_PX,
    SHAPES,
    Scene,
    place,
    read_image,
    render,
    shape_mask,
    training_scenes,
)

ATTRIBUTES = ("background", "colour", "shape")
EDIT_FIGURES = ("asked", "kept", "joint", "iou")
HELD_OUT_PER_ATTRIBUTE = 16
HELD_OUT_SEED = 15


@dataclass(frozen=True)
class Edit:
    source: Scene
    attribute: str
    value: str

    @property
    def target(self) -> Scene:
        return replace(self.source, **{self.attribute: self.value})

    def instruction(self, language: str) -> str:
        return instruction(self.source, self.attribute, self.value, language)


def _is_valid(scene: Scene) -> bool:
    return scene.colour != scene.background


def all_edits() -> list[Edit]:
    """Every one-attribute change between two text-to-image training scenes."""
    scenes = set(training_scenes())
    candidates = [
        Edit(source, attribute, value)
        for source in sorted(scenes, key=lambda scene: (scene.shape, scene.colour, scene.background))
        for attribute, values in (("background", COLOURS), ("colour", COLOURS), ("shape", SHAPES))
        for value in values
        if value != getattr(source, attribute)
    ]
    return [edit for edit in candidates if _is_valid(edit.target) and edit.target in scenes]


def held_out_edits() -> list[Edit]:
    """16 (source scene, instruction) pairs per attribute never trained on, drawn with a fixed seed.

    Each instruction is still trained on other sources and each source with other instructions.
    """
    chooser, edits = random.Random(HELD_OUT_SEED), all_edits()
    held_out = []
    for attribute in ATTRIBUTES:
        held_out += chooser.sample([edit for edit in edits if edit.attribute == attribute], HELD_OUT_PER_ATTRIBUTE)
    return held_out


def training_edits() -> list[Edit]:
    held_out = set(held_out_edits())
    return [edit for edit in all_edits() if edit not in held_out]


def draw_pair(
    edit: Edit, rng: random.Random, width_px: int = IMAGE_SIDE_PX, height_px: int = IMAGE_SIDE_PX
) -> tuple[Image.Image, Image.Image]:
    """Source and target drawings with the shape at the same random place and size."""
    placement = place(rng, width_px, height_px)
    return render(edit.source, placement, width_px, height_px), render(edit.target, placement, width_px, height_px)


def mask_iou(first: Image.Image, second: Image.Image) -> float:
    a, b = shape_mask(first), shape_mask(second)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def edit_scores(edit: Edit, result: Image.Image, expected: Image.Image) -> dict[str, float]:
    """Asked attribute right, the other two kept, both at once (joint), and the shape's mask IoU with
    the expected drawing.

    The expected drawing has the source's place and size, so for colour edits its mask is the
    source's; for a class change it is the new shape in the source's box.
    """
    reading = read_image(result)
    target = edit.target
    untouched = [attribute for attribute in ATTRIBUTES if attribute != edit.attribute]
    asked = float(getattr(reading, edit.attribute) == getattr(target, edit.attribute))
    kept = float(all(getattr(reading, attribute) == getattr(target, attribute) for attribute in untouched))
    return {"asked": asked, "kept": kept, "joint": asked * kept, "iou": mask_iou(result, expected)}


def edit_adherence(
    edits: list[Edit], results: list[list[Image.Image]], expected: list[Image.Image]
) -> dict[str, float]:
    """Mean scores over all results, overall and per attribute ('asked', 'kept', 'joint', 'iou', 'colour/asked', ...)."""
    rows = [
        (edit.attribute, edit_scores(edit, result, truth))
        for edit, edit_results, truth in zip(edits, results, expected)
        for result in edit_results
    ]
    totals: dict[str, float] = {}
    for group in (None, *ATTRIBUTES):
        chosen = [scores for attribute, scores in rows if group in (None, attribute)]
        for key in EDIT_FIGURES:
            name = key if group is None else f"{group}/{key}"
            totals[name] = float(np.mean([scores[key] for scores in chosen])) if chosen else 0.0
    return totals


def blank_canvas(edit: Edit, source: Image.Image) -> Image.Image:
    """The source with its shape erased: only the source's background colour."""
    return Image.new("RGB", source.size, COLOURS[edit.source.background])


def baseline_adherence(
    edits: list[Edit], sources: list[Image.Image], expected: list[Image.Image]
) -> dict[str, dict[str, float]]:
    """What doing nothing scores on these edits: 'copy' returns the source unchanged, 'blank' its
    background alone. A copy keeps everything and sits where the shape was, yet never does what was
    asked, so its joint rate is 0; a model's figures mean something only beside these."""
    return {
        "copy": edit_adherence(edits, [[source] for source in sources], expected),
        "blank": edit_adherence(
            edits, [[blank_canvas(edit, source)] for edit, source in zip(edits, sources)], expected
        ),
    }
