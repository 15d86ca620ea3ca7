"""A shape the offline model never drew (a plus), to prove that a finetune teaches a new concept.

The shapes world knows circles, squares and triangles, and its scorer (`shapes_world.read_image`) files any blob
under one of them by how much of its bounding box it fills. A plus fills about 5/9 of its box, as a triangle
does, so `read_concept` looks for the plus's own signature first (all four corners of its box empty, which no
circle, square or triangle has) and otherwise answers exactly what `read_image` answers: the three known shapes
read as before. The new shape is drawn at the same random sizes and places as the others, in the same palette
(the VAE knows only those 8 colours, and it reconstructs a plus well).

The proof's split: 12 (colour, background) pairs to train on, each colour at least once as shape and as
background, and pairs never trained on to test; every colour of a test pair was trained in both roles.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw

from training.shapes_world import (
    COLOURS,
    IMAGE_SIDE_PX,
    Placement,
    Reading,
    Scene,
    _background_and_mask,
    nearest_colour,
    place,
    read_image,
    render,
)

CONCEPT = "plus"
PLUS_ARM_SHARE = 1 / 3  # arm width over the side: the plus fills 5/9 of its box
MAX_CORNER_FILL = 0.12  # each quarter-box corner of a plus is empty; a circle fills 0.22 of its own
PLUS_FILL_RANGE = (0.4, 0.74)  # an exact plus fills 0.56 (a circle 0.79); decoded ones round their inner corners
MIN_SHAPE_PIXELS = 30  # as read_image: fewer pixels far from the background is no shape at all
UNSEEN_PAIRS_SEED = 7
UNSEEN_PAIR_COUNT = 16
JUDGE_PAIRS_SEED = 1
JUDGE_PAIR_COUNT = 8


def colour_pairs() -> list[tuple[str, str]]:
    names = list(COLOURS)
    return [(colour, background) for colour in names for background in names if colour != background]


def training_pairs() -> list[tuple[str, str]]:
    """12 (colour, background) pairs: each colour on the next one and, for every other colour, on the third one
    after it, so every colour is trained as a shape colour and as a background."""
    names = list(COLOURS)
    neighbours = [(names[index], names[(index + 1) % 8]) for index in range(8)]
    return neighbours + [(names[index], names[(index + 3) % 8]) for index in (0, 2, 4, 6)]


def judge_pairs(trained: set[tuple[str, str]], count: int = JUDGE_PAIR_COUNT) -> list[tuple[str, str]]:
    """The pairs the strength sweep scores a finetune on (training/finetune_strength.py): `count` pairs its
    images were not drawn in, with a fixed seed."""
    untrained = [pair for pair in colour_pairs() if pair not in trained]
    return random.Random(JUDGE_PAIRS_SEED).sample(untrained, min(count, len(untrained)))


def unseen_pairs(count: int = UNSEEN_PAIR_COUNT) -> list[tuple[str, str]]:
    """The proof's test split: of `count` pairs drawn with a fixed seed from the 44 never trained on, those the
    strength sweep does not score on (it chooses the default strength), so no choice was made on them."""
    trained = set(training_pairs())
    drawn = random.Random(UNSEEN_PAIRS_SEED).sample([pair for pair in colour_pairs() if pair not in trained], count)
    judged = set(judge_pairs(trained))
    return [pair for pair in drawn if pair not in judged]


def validation_pairs() -> list[tuple[str, str]]:
    """Pairs neither trained nor in the test split: where the recipe (steps, prior, class words) was chosen."""
    excluded = set(training_pairs()) | set(unseen_pairs())
    return [pair for pair in colour_pairs() if pair not in excluded]


def render_plus(
    colour: str, background: str, placement: Placement, width_px: int = IMAGE_SIDE_PX, height_px: int = IMAGE_SIDE_PX
) -> Image.Image:
    image = Image.new("RGB", (width_px, height_px), COLOURS[background])
    left, top, size = placement.left, placement.top, placement.size
    arm = size * PLUS_ARM_SHARE
    pen = ImageDraw.Draw(image)
    pen.rectangle((left + arm, top, left + size - arm, top + size), fill=COLOURS[colour])
    pen.rectangle((left, top + arm, left + size, top + size - arm), fill=COLOURS[colour])
    return image


def draw_scene(scene: Scene, rng: random.Random, side_px: int = IMAGE_SIDE_PX) -> Image.Image:
    """Any scene, the plus included, with the shape at a random size and place (as shapes_world.draw)."""
    placement = place(rng, side_px, side_px)
    if scene.shape == CONCEPT:
        return render_plus(scene.colour, scene.background, placement, side_px, side_px)
    return render(scene, placement, side_px, side_px)


def is_plus(mask: np.ndarray) -> bool:
    """A blob whose box's four corners are empty and which fills about half of the box."""
    rows, cols = np.where(mask)
    box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    corner_rows, corner_cols = max(1, box.shape[0] // 4), max(1, box.shape[1] // 4)
    corners = [
        box[:corner_rows, :corner_cols],
        box[:corner_rows, -corner_cols:],
        box[-corner_rows:, :corner_cols],
        box[-corner_rows:, -corner_cols:],
    ]
    low, high = PLUS_FILL_RANGE
    return low < box.mean() < high and max(corner.mean() for corner in corners) < MAX_CORNER_FILL


def read_concept(image: Image.Image) -> Reading:
    """`read_image`, with a blob that has the plus's signature read as a plus."""
    pixels, background_rgb, mask = _background_and_mask(image)
    if mask.sum() >= MIN_SHAPE_PIXELS and is_plus(mask):
        return Reading(CONCEPT, nearest_colour(np.median(pixels[mask], axis=0)), nearest_colour(background_rgb))
    return read_image(image)


def concept_adherence(scenes: list[Scene], images: list[list[Image.Image]]) -> dict[str, float]:
    """As shapes_world.adherence, read with `read_concept`: the share of images whose shape colour, background,
    shape, colour and background together ("colours") and all three read as asked."""
    totals = {"colour": 0, "background": 0, "colours": 0, "shape": 0, "all": 0}
    for scene, scene_images in zip(scenes, images):
        for image in scene_images:
            checks = read_concept(image).score(scene)
            checks["colours"] = checks["colour"] and checks["background"]
            for key in totals:
                totals[key] += checks[key]
    count = sum(len(scene_images) for scene_images in images)
    return {key: value / count for key, value in totals.items()}
