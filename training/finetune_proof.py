"""The offline proof that a finetune teaches a concept (issue 27): 12 pluses, a shape the offline model never drew.

Each of the 12 training images is a plus in one of training_pairs()'s (colour, background) pairs, captioned
"a red TOK on a green background". The finetune runs through FinetuneWorker with the offline model's default
settings, and the served model with the adapter at its default strength is then asked for colour pairs it never
saw with the plus ("a yellow TOK on a white background"). Image i of a prompt uses seed i, as the service's seeded
requests do. Shared by bench/finetune.py and tests/unit/test_finetune_concept.py.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import torch
from PIL import Image

from deployments.finetune import (
    DEFAULT_LORA_RANK,
    DEFAULT_TRIGGER_WORD,
    FinetuneExample,
    FinetuneParams,
    default_iterations,
    default_learning_rate,
)
from deployments.loading import load_pipeline, resolve_weights
from deployments.registry import get_variant
from lora.adapter_file import ADAPTER_FILENAME
from training.finetune_data import decode_image
from training.finetune_sampling import SampleSettings, draw_images, encode_prompts, png_bytes
from training.shapes_concepts import CONCEPT, concept_adherence, draw_scene, render_plus, training_pairs
from training.shapes_world import COLOURS, IMAGE_SIDE_PX, Scene, place

MODEL, BASE_VARIANT, WEIGHTS, MODE = "flux-2-klein-4b", "flux-2-klein-base-4b", "emulated", "general"
TRAINING_SEED = 0  # the 12 drawings are placed by random.Random(TRAINING_SEED)
ADAPTER_NAME = "proof"


def caption(colour: str, background: str, trigger_word: str = DEFAULT_TRIGGER_WORD) -> str:
    return f"a {colour} {trigger_word} on a {background} background"


def proof_examples() -> list[FinetuneExample]:
    rng = random.Random(TRAINING_SEED)
    return [
        FinetuneExample(
            f"plus-{index}.png",
            png_bytes(draw_scene(Scene(CONCEPT, colour, background), rng)),
            caption(colour, background),
        )
        for index, (colour, background) in enumerate(training_pairs())
    ]


def proof_params(**changes) -> FinetuneParams:
    """What the service decides for a request that names only the images, mode and trigger word."""
    settings = {
        "finetune_id": "proof-plus",
        "model": MODEL,
        "base_variant": BASE_VARIANT,
        "weights": WEIGHTS,
        "mode": MODE,
        "trigger_word": DEFAULT_TRIGGER_WORD,
        "iterations": default_iterations(WEIGHTS),
        "learning_rate": default_learning_rate(MODE, "lora", WEIGHTS),
        "lora_rank": DEFAULT_LORA_RANK,
        **changes,
    }
    return FinetuneParams(**settings)


class ServedModel:
    """The served offline model on the CPU, with an adapter loaded as the denoiser loads it (or none)."""

    def __init__(self, adapter: bytes | None = None, strength: float = 1.0):
        self.weights = resolve_weights(get_variant(MODEL), WEIGHTS)
        self.pipeline = load_pipeline(self.weights, torch.device("cpu"), torch.float32)
        self.settings = SampleSettings.of(self.weights, IMAGE_SIDE_PX)
        if adapter is not None:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / ADAPTER_FILENAME
                path.write_bytes(adapter)
                self.pipeline.load_lora_weights(str(path), adapter_name=ADAPTER_NAME)
            self.pipeline.set_adapters([ADAPTER_NAME], [strength])

    def images(self, pairs: list[tuple[str, str]], seeds: int, chunk: int = 8) -> list[list[Image.Image]]:
        """`seeds` images per (colour, background) pair, image i from seed i."""
        empty = encode_prompts(self.pipeline, self.settings, [""], torch.device("cpu"))
        images = []
        for start in range(0, len(pairs), chunk):
            prompts = [caption(colour, background) for colour, background in pairs[start : start + chunk]]
            embeds = encode_prompts(self.pipeline, self.settings, prompts, torch.device("cpu"))
            flat = draw_images(self.pipeline, self.settings, embeds, empty, seeds)
            images += [flat[index : index + seeds] for index in range(0, len(flat), seeds)]
        return images

    def scores(self, pairs: list[tuple[str, str]], seeds: int) -> dict[str, float]:
        return concept_adherence(plus_scenes(pairs), self.images(pairs, seeds))


def plus_scenes(pairs: list[tuple[str, str]]) -> list[Scene]:
    return [Scene(CONCEPT, colour, background) for colour, background in pairs]


def baseline_scores(pairs: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """What answers that need no model score on the same pairs: the asked background alone ("blank"), the
    training image whose pair shares the most with the asked one ("nearest training image": memorising), and a
    plus drawn in the asked colours ("drawn truth": what the scorer gives a right answer)."""
    rng = random.Random(1)
    trained = list(zip(training_pairs(), proof_examples()))

    def nearest(colour: str, background: str) -> Image.Image:
        overlap = lambda item: (item[0][0] == colour) + (item[0][1] == background)  # noqa: E731
        example = max(trained, key=overlap)[1]
        return decode_image(example.image_png, example.name)

    answers = {
        "blank": lambda colour, background: Image.new("RGB", (IMAGE_SIDE_PX, IMAGE_SIDE_PX), COLOURS[background]),
        "nearest training image": nearest,
        "drawn truth": lambda colour, background: render_plus(colour, background, place(rng)),
    }
    scenes = plus_scenes(pairs)
    return {name: concept_adherence(scenes, [[answer(*pair)] for pair in pairs]) for name, answer in answers.items()}
