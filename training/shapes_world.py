"""A synthetic world of coloured shapes: drawings, captions, held-out combinations, a scorer.

It gives the offline default model something to learn and a way to check it drew what it
was asked: "a red circle on a blue background" should come back red, round, on blue.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from skimage.measure import label

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 60, 180),
    "orange": (250, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")
IMAGE_SIDE_PX = 64
MIN_SHAPE_PX, MAX_SHAPE_PX = 22, 44


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} on a {self.background} background"


def all_scenes() -> list[Scene]:
    return [
        Scene(shape, colour, background)
        for shape, colour, background in itertools.product(SHAPES, COLOURS, COLOURS)
        if colour != background
    ]


def held_out_scenes() -> list[Scene]:
    """24 colour/shape/background triples never shown in training.

    Each holds out one shape for one (colour, background) pair, so the pair itself, and
    every shape-colour and shape-background pair, are still seen with something else.
    """
    pairs = [(colour, background) for colour in COLOURS for background in COLOURS if colour != background]
    return [
        Scene(SHAPES[index % 3], colour, background)
        for index, (colour, background) in enumerate(pairs)
        if index % 7 in (1, 3, 5)
    ]


def training_scenes() -> list[Scene]:
    held_out = set(held_out_scenes())
    return [scene for scene in all_scenes() if scene not in held_out]


# Sizes the model is trained at: sides multiples of 16 (one token each) and at least 64 (the least
# the pipeline takes as a reference image, and BFL's least), from 1:1 to 7:4 (about 16:9), so an
# aspect ratio near the default area is a real picture of that shape rather than a tiled square.
BUCKETS_PX: tuple[tuple[int, int], ...] = ((64, 64), (80, 64), (64, 80), (96, 64), (64, 96), (112, 64), (64, 112))


@dataclass(frozen=True)
class Placement:
    """Where the shape sits: kept by an edit, so source and target differ only in what was asked."""

    left: int
    top: int
    size: int


def place(rng: random.Random, width_px: int = IMAGE_SIDE_PX, height_px: int = IMAGE_SIDE_PX) -> Placement:
    """A random size (scaled with the shorter side) and position fully inside the frame."""
    short_px = min(width_px, height_px)
    size = rng.randint(MIN_SHAPE_PX * short_px // IMAGE_SIDE_PX, MAX_SHAPE_PX * short_px // IMAGE_SIDE_PX)
    return Placement(left=rng.randint(2, width_px - size - 2), top=rng.randint(2, height_px - size - 2), size=size)


def render(
    scene: Scene, placement: Placement, width_px: int = IMAGE_SIDE_PX, height_px: int = IMAGE_SIDE_PX
) -> Image.Image:
    image = Image.new("RGB", (width_px, height_px), COLOURS[scene.background])
    left, top, size = placement.left, placement.top, placement.size
    box = (left, top, left + size, top + size)
    pen = ImageDraw.Draw(image)
    fill = COLOURS[scene.colour]
    if scene.shape == "circle":
        pen.ellipse(box, fill=fill)
    elif scene.shape == "square":
        pen.rectangle(box, fill=fill)
    else:
        pen.polygon([(left + size / 2, top), (left, top + size), (left + size, top + size)], fill=fill)
    return image


def draw(scene: Scene, rng: random.Random, side_px: int = IMAGE_SIDE_PX) -> Image.Image:
    """The scene with the shape at a random size and position, fully inside the frame."""
    return render(scene, place(rng, side_px, side_px), side_px, side_px)


def nearest_colour(rgb: np.ndarray) -> str:
    names = list(COLOURS)
    palette = np.array([COLOURS[name] for name in names], dtype=np.float32)
    return names[int(np.argmin(((palette - rgb.astype(np.float32)) ** 2).sum(axis=1)))]


@dataclass(frozen=True)
class Reading:
    """What the scorer sees in an image."""

    shape: str | None
    colour: str | None
    background: str

    def score(self, scene: Scene) -> dict[str, bool]:
        checks = {
            "colour": self.colour == scene.colour,
            "background": self.background == scene.background,
            "shape": self.shape == scene.shape,
        }
        checks["all"] = all(checks.values())
        return checks


def _background_and_mask(image: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels at 64x64, the background colour from the border, the largest blob far from it.

    Taking the largest connected blob keeps faint specks and edge lines out of the mask.
    Other aspect ratios are squeezed to 64x64, which keeps every fill ratio below.
    """
    pixels = np.asarray(image.convert("RGB").resize((IMAGE_SIDE_PX, IMAGE_SIDE_PX)), dtype=np.float32)
    border = np.concatenate(
        [
            pixels[:2].reshape(-1, 3),
            pixels[-2:].reshape(-1, 3),
            pixels[:, :2].reshape(-1, 3),
            pixels[:, -2:].reshape(-1, 3),
        ]
    )
    background_rgb = np.median(border, axis=0)
    distance = np.sqrt(((pixels - background_rgb) ** 2).sum(axis=2))
    blobs = label(distance > 60, connectivity=1)
    sizes = np.bincount(blobs.ravel())[1:]
    mask = blobs == (int(np.argmax(sizes)) + 1) if len(sizes) else blobs > 0
    return pixels, background_rgb, mask


def shape_mask(image: Image.Image) -> np.ndarray:
    """Where the scorer sees the shape (64x64 booleans), for position checks like an edit's IoU."""
    return _background_and_mask(image)[2]


def read_image(image: Image.Image) -> Reading:
    """Background from the border, the shape as the largest blob of pixels far from it, class by fill ratio.

    A circle fills pi/4 of its bounding box, a square all of it, a triangle half.
    """
    pixels, background_rgb, mask = _background_and_mask(image)
    background = nearest_colour(background_rgb)
    if mask.sum() < 30:
        return Reading(shape=None, colour=None, background=background)
    colour = nearest_colour(np.median(pixels[mask], axis=0))
    rows, cols = np.where(mask)
    box_area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    fill = mask.sum() / box_area
    shape = "square" if fill > 0.9 else "circle" if fill > 0.64 else "triangle"
    return Reading(shape=shape, colour=colour, background=background)


def adherence(scenes: list[Scene], images: list[list[Image.Image]]) -> dict[str, float]:
    """Share of images whose shape colour, background, shape and all three read as asked."""
    totals = {"colour": 0, "background": 0, "shape": 0, "all": 0}
    for scene, scene_images in zip(scenes, images):
        for image in scene_images:
            for key, ok in read_image(image).score(scene).items():
                totals[key] += ok
    count = sum(len(scene_images) for scene_images in images)
    return {key: value / count for key, value in totals.items()}
