"""How a finetune trains on given weights: the settings a request does not choose.

The request chooses iterations, learning rate and rank (deployments/finetune.py fills what it leaves out); the
rest depends on the model. Real klein weights train as diffusers' DreamBooth script does by default (512 px,
batch 1, no prior preservation: drawing class images with a 50-step Base model costs minutes). The offline model
trains at its native 64 px with a batch of 4 and DreamBooth prior preservation, drawn by itself before training:
each training caption with the class word "square" in place of the trigger word (the same colours with a known
shape, so only the trigger word tells the new shape apart) and 48 of its own captions in random colour pairs
(its colour words keep working). Chosen on the proof's validation pairs (training/shapes_concepts.py, 2 seeds
each, the finetune at strength 1.0; shape drawn / colours right), never on its test pairs:

| recipe (learning rate 2e-3, rank 32) | shape | colours |
|---|---|---|
| 1000 steps, 48 world priors | 0.41 | 0.93 |
| 1000 steps, + class word "square" | 0.52 | 0.98 |
| 1000 steps, + class words "square", "circle" | 0.52 | 0.96 |
| 1500 steps, + class word "square" (kept) | 0.63 | 1.00 |
| 1500 steps, + class words "square", "circle" | 0.53 | 0.87 |

Mirrored, shifted or zoomed-out copies of the images (augmentation) taught the new shape more slowly and were
dropped; a learning rate of 4e-3 for 400 steps drew it in 0.20.
"""

from __future__ import annotations

import random
import re
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
    prior_images: int  # class images of random world captions the base draws before training (0: none)
    prior_weight: float
    class_words: tuple[str, ...] = ()  # also draw every caption with its trigger word replaced by each of these
    unconditional_prior_images: int = 0  # and this many of the empty prompt's
    warmup_share: float = 0.05

    def prior_prompts(self, captions: list[str], trigger_word: str, seed: int) -> list[str]:
        """DreamBooth's class prompts: each training caption with a class word in place of the trigger word (the
        same colours with a known shape, so only the trigger word tells the new shape apart), then the offline
        world's own captions in random colour pairs."""
        trigger = re.compile(rf"\b{re.escape(trigger_word)}\b", re.IGNORECASE)
        prompts = [trigger.sub(word, caption) for caption in captions for word in self.class_words]
        rng = random.Random(seed)
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
        return Recipe(side_px, batch_size=4, prior_images=48, prior_weight=0.5, class_words=("square",))
    return Recipe(
        side_px,
        batch_size=1 if side_px >= REAL_SIDE_PX else 4,
        prior_images=0,
        prior_weight=0.0,
    )
