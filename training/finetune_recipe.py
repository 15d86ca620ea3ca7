"""How a finetune trains on given weights: the settings a request does not choose.

The request chooses iterations, learning rate and rank (deployments/finetune.py fills what it leaves out); the
rest depends on the model. Real klein weights train as diffusers' DreamBooth script does by default (512 px,
batch 1, no prior preservation: drawing class images with a 50-step Base model costs minutes). The offline model
trains at its native 64 px with a batch of 4 and DreamBooth prior preservation: 48 images of the shapes it knows,
drawn by itself before training, keep its colour words working while the trigger word learns the new shape (on
unseen colour pairs that raised "colours right" from 0.78 to 0.92, bench/finetune.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from deployments.finetune import FinetuneParams, is_offline_model
from deployments.weights import ResolvedWeights, draws_noise
from training.shapes_world import COLOURS, SHAPES, Scene

REAL_SIDE_PX = 512
NOISE_SIDE_PX = 64  # random-weight checkpoints (emulated:tiny) train only to run the code paths: the least side


@dataclass(frozen=True)
class Recipe:
    side_px: int
    batch_size: int
    views: int  # augmented views per image: 1 trains on the images as given
    caption_dropout: float
    prior_images: int  # class images the base draws before training (0: no prior preservation)
    prior_weight: float
    warmup_share: float = 0.05

    def prior_prompts(self, seed: int) -> list[str]:
        """The offline world's own captions, of shapes it knows, in random colour pairs."""
        rng = random.Random(seed)
        prompts = []
        for _ in range(self.prior_images):
            colour, background = rng.sample(list(COLOURS), 2)
            prompts.append(Scene(rng.choice(SHAPES), colour, background).caption)
        return prompts


def training_side_px(params: FinetuneParams, weights: ResolvedWeights) -> int:
    """The checkpoint's native side up to REAL_SIDE_PX (the offline model's 64 px, real klein's 512 px)."""
    return NOISE_SIDE_PX if draws_noise(params.weights) else min(weights.defaults.width, REAL_SIDE_PX)


def recipe_for(params: FinetuneParams, weights: ResolvedWeights) -> Recipe:
    side_px = training_side_px(params, weights)
    if is_offline_model(params.weights) and params.mode != "edit":
        return Recipe(side_px, batch_size=4, views=1, caption_dropout=0.0, prior_images=48, prior_weight=0.5)
    return Recipe(
        side_px,
        batch_size=1 if side_px >= REAL_SIDE_PX else 4,
        views=1,
        caption_dropout=0.0,
        prior_images=0,
        prior_weight=0.0,
    )
