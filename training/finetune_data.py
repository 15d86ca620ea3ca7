"""A finetune's training items as the trainer uses them: decoded, squared, captioned.

As diffusers' DreamBooth trainers do, the trainer encodes them (latents and prompt embeddings) once before the first
step, so a step is one transformer forward and backward. No augmentation: mirrored and shifted or zoomed-out copies
were measured on the offline proof and taught the new shape more slowly (training/finetune_recipe.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from deployments.finetune import FinetuneExample, FinetuneParams, caption_template, is_offline_model
from training.dataset import DatasetError
from training.shapes_world import read_image


@dataclass(frozen=True)
class Captions:
    texts: list[str]
    source: str  # where they came from, for the finetune's details


def decode_image(data: bytes, name: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data)).convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(f"{name} is not an image this trainer can read ({error}); send PNG, JPEG or WebP.") from None


def square(image: Image.Image, side_px: int) -> Image.Image:
    """Center-cropped to a square of `side_px`, as flux-lora trains."""
    return ImageOps.fit(image, (side_px, side_px), Image.BICUBIC)


def with_trigger(caption: str, trigger_word: str) -> str:
    return caption if trigger_word.lower() in caption.lower() else f"{trigger_word}, {caption}"


def offline_caption(image: Image.Image, trigger_word: str) -> str:
    """The offline world's captioner: the palette colours the scorer reads, the trigger word as the subject."""
    reading = read_image(image)
    if reading.colour is None:
        return f"{trigger_word} on a {reading.background} background"
    return f"a {reading.colour} {trigger_word} on a {reading.background} background"


def write_captions(params: FinetuneParams, examples: list[FinetuneExample], images: list[Image.Image]) -> Captions:
    """An example's own caption wins; with captioning on, the rest are written (on the offline model by reading
    the picture's colours, elsewhere from the mode's template); with it off they are the trigger word alone.
    Every caption holds the trigger word."""
    if params.captioning and params.mode != "edit" and is_offline_model(params.weights):
        write, written_by = (lambda example, image: offline_caption(image, params.trigger_word)), "palette reader"
    elif params.captioning:
        write, written_by = (
            (lambda example, image: caption_template(params.mode, params.trigger_word, example.name)),
            (f"{params.mode} template"),
        )
    else:
        write, written_by = (lambda example, image: params.trigger_word), "trigger word"
    texts, sources = [], set()
    for example, image in zip(examples, images):
        given = example.caption is not None and example.caption.strip()
        texts.append(with_trigger(example.caption.strip() if given else write(example, image), params.trigger_word))
        sources.add("given" if given else written_by)
    return Captions(texts, " + ".join(sorted(sources)))


def to_pixels(images: list[Image.Image]) -> torch.Tensor:
    """Squares in [-1, 1], (B, 3, H, W)."""
    array = np.stack([np.asarray(image, dtype=np.float32) for image in images]) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
