"""Quality scores that need no download, and CLIP when a local model is configured.

- SSIM and PSNR of each image against the same prompt and seed at the highest step count
  measured: where the curve flattens, more steps stop paying.
- Shapes-world adherence (colour, background and shape read by the scorer) for prompts
  that are captions of that world: does the image show what was asked.
- CLIP score, 100 x max(cos(image, text), 0) as in Hessel et al. 2021, from a local CLIP
  folder. (torchmetrics' CLIPScore computes the same, but breaks on transformers 5.)
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from training.shapes_world import Scene, all_scenes, read_image

SHAPES_CAPTIONS: dict[str, Scene] = {scene.caption: scene for scene in all_scenes()}


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """Structural similarity of two uint8 RGB images (1.0 = identical)."""
    return float(structural_similarity(image, reference, channel_axis=2, data_range=255))


def psnr_db(image: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB; infinite for identical images."""
    if np.array_equal(image, reference):
        return float("inf")
    return float(peak_signal_noise_ratio(reference, image, data_range=255))


def shapes_adherence(prompt: str, image: np.ndarray) -> bool | None:
    """Whether colour, background and shape all read as the prompt asks; None off that world."""
    scene = SHAPES_CAPTIONS.get(prompt)
    if scene is None:
        return None
    return read_image(Image.fromarray(image)).score(scene)["all"]


class ClipScorer:
    """CLIP score of images against their prompts, from a CLIP checkpoint on local disk."""

    def __init__(self, model_path: str):
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(model_path).eval()
        self.processor = CLIPProcessor.from_pretrained(model_path)

    @torch.inference_mode()
    def score(self, images: list[np.ndarray], prompts: list[str]) -> list[float]:
        inputs = self.processor(
            text=prompts,
            images=[Image.fromarray(i) for i in images],
            return_tensors="pt",
            padding=True,
            truncation=True,
        )
        image_features = self.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        text_features = self.model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).pooler_output
        cosine = torch.nn.functional.cosine_similarity(image_features, text_features, dim=-1)
        return (100 * cosine.clamp(min=0)).tolist()
