"""The strength a finetune is served at by default: a few strengths tried on the served model, the best kept.

A LoRA trained on klein Base is often best at 1.25-1.5 on the distilled model, so the adapter is loaded into the
served model's pipeline (as the denoiser loads it) and each of `STRENGTHS` is scored. The strength kept is the one
nearest 1 among those within one standard error of the best score (the one-standard-error rule): a strength has
to beat 1 by more than the judge's own noise, since past the trained strength colours are the first to go (on
the offline proof, 1.25 drew the plus 0.02-0.05 more often than 1.0 and the asked colours 0.11 less). Two judges:

- the offline model (text to image): the shapes world's own scorer. Prompts ask for palette colour pairs the
  training captions never named; an image scores when its colours read as asked and its shape is the trained
  one, which the judge knows only from the training images: the blob's outline (cropped to its box, 16x16)
  overlaps a training image's outline more than any circle's, square's or triangle's.
- anything else: the served model's flow-matching loss on the training items at fixed noise (lower is better), a
  measure of how well the model at that strength reproduces the concept, with no captioner or classifier.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from deployments.finetune import STRENGTHS
from training.finetune_sampling import SampleSettings, draw_images, encode_prompts
from training.flow_matching import flow_matching_loss, token_ids
from training.shapes_concepts import judge_pairs
from training.shapes_world import SHAPES, Scene, draw, read_image, shape_mask

OUTLINE_SIDE = 16
JUDGE_PROMPTS = 8
JUDGE_SEEDS = 4
JUDGE_FIRST_SEED = 1000  # apart from the seeds the bench scores
LOSS_NOISE_LEVELS = (0.2, 0.4, 0.6, 0.8)


@dataclass(frozen=True)
class StrengthChoice:
    strength: float
    scores: dict[float, float]
    criterion: str


def best_strength(scores: dict[float, float], standard_error: float = 0.0) -> float:
    """The strength nearest 1 whose score is within `standard_error` of the best."""
    top = max(scores.values())
    close = [strength for strength, score in scores.items() if score >= top - standard_error - 1e-9]
    return min(close, key=lambda strength: abs(strength - 1.0))


def sweep(pipeline, adapter_name: str, judge, strengths: tuple[float, ...] = STRENGTHS) -> StrengthChoice:
    """`judge.score(pipeline)` with the adapter at each strength; the pipeline is left at the chosen one."""
    scores = {}
    for strength in strengths:
        pipeline.set_adapters([adapter_name], [strength])
        scores[strength] = round(judge.score(pipeline), 4)
    strength = best_strength(scores, judge.standard_error(max(scores.values())))
    pipeline.set_adapters([adapter_name], [strength])
    return StrengthChoice(strength, scores, judge.criterion)


def outline(image: Image.Image) -> np.ndarray | None:
    """The shape's blob cropped to its box and resized to OUTLINE_SIDE squared; None when there is no blob."""
    mask = shape_mask(image)
    if mask.sum() < 30:
        return None
    rows, cols = np.where(mask)
    box = Image.fromarray(mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(np.uint8) * 255)
    return np.asarray(box.resize((OUTLINE_SIDE, OUTLINE_SIDE), Image.BILINEAR)) > 127


def _best_overlap(candidate: np.ndarray, outlines: list[np.ndarray]) -> float:
    return max(float((candidate & known).sum() / max(1, (candidate | known).sum())) for known in outlines)


class ShapesConceptJudge:
    """The shapes world's scorer for a shape it has no name for: see the module's docstring."""

    criterion = "offline scorer: share of images with the asked palette colours and the trained shape's outline"

    def __init__(self, images: list[Image.Image], trigger_word: str, settings: SampleSettings, device: torch.device):
        mirrored = images + [ImageOps.mirror(image) for image in images]
        self.concept = [shape for shape in map(outline, mirrored) if shape is not None]
        rng = random.Random(0)
        drawings = [draw(Scene(shape, "white", "black"), rng) for shape in SHAPES for _ in range(8)]
        self.known = [outline(image) for image in drawings]
        trained = {(reading.colour, reading.background) for reading in map(read_image, images)}
        self.pairs = judge_pairs(trained, JUDGE_PROMPTS)
        self.prompts = [f"a {colour} {trigger_word} on a {background} background" for colour, background in self.pairs]
        self.settings, self.device = settings, device

    @staticmethod
    def standard_error(share: float) -> float:
        """Of a share measured on JUDGE_PROMPTS x JUDGE_SEEDS images."""
        return math.sqrt(max(share * (1 - share), 0.0) / (JUDGE_PROMPTS * JUDGE_SEEDS))

    def is_concept(self, image: Image.Image) -> bool:
        shape = outline(image)
        return shape is not None and _best_overlap(shape, self.concept) > _best_overlap(shape, self.known)

    def score(self, pipeline) -> float:
        embeds = encode_prompts(pipeline, self.settings, self.prompts, self.device)
        empty = encode_prompts(pipeline, self.settings, [""], self.device)
        images = draw_images(pipeline, self.settings, embeds, empty, JUDGE_SEEDS, JUDGE_FIRST_SEED)
        right = 0
        for index, image in enumerate(images):
            colour, background = self.pairs[index // JUDGE_SEEDS]
            reading = read_image(image)
            right += reading.colour == colour and reading.background == background and self.is_concept(image)
        return right / len(images)


class FlowLossJudge:
    """The served model's flow-matching loss on the training items, at fixed noise and noise levels."""

    criterion = "served model's flow-matching loss on the training items at fixed noise (score = -loss)"

    def __init__(self, tokens: torch.Tensor, prompt_embeds: torch.Tensor, side_tokens: int, references=None):
        self.tokens, self.prompt_embeds, self.side_tokens, self.references = (
            tokens,
            prompt_embeds,
            side_tokens,
            references,
        )

    @staticmethod
    def standard_error(loss: float) -> float:
        """The noise and noise levels are fixed, so the same strength always scores the same: no tolerance."""
        return 0.0

    @torch.no_grad()
    def score(self, pipeline) -> float:
        transformer = pipeline.transformer
        count = self.tokens.shape[0]
        image_ids, text_ids = token_ids(count, self.side_tokens, self.side_tokens, self.prompt_embeds.shape[1])
        device, dtype = transformer.device, transformer.dtype
        extra = {}
        if self.references is not None:
            extra = {"reference_tokens": self.references[0].to(device, dtype), "reference_ids": self.references[1]}
        losses = []
        for level in LOSS_NOISE_LEVELS:
            generator = torch.Generator().manual_seed(int(level * 1000))
            losses.append(
                flow_matching_loss(
                    transformer,
                    self.tokens.to(device, dtype),
                    self.prompt_embeds.to(device, dtype),
                    image_ids.to(device),
                    text_ids.to(device),
                    generator,
                    noise_levels=torch.full((count,), level),
                    **extra,
                ).item()
            )
        return -float(np.mean(losses))
