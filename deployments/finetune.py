"""The finetune job kind's contract (BFL's `/v1/finetune` shape), torch-free so the ingress decides every setting.

`FinetuneParams` is decided once, at submit, like `GenerationParams`: the defaults below fill what a request
leaves out, and the trainer (training/finetune_worker.py, run as a Ray actor) trusts what it is given. The
trainer answers with a stream of `FinetuneEvent`s: cheap ones (step, loss) every step, a sample image now and
then, checkpoint bytes the job stores so a killed trainer resumes from its last one, and a last event that
carries the adapter file (a plain diffusers/ComfyUI LoRA .safetensors), its default strength and details.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deployments.progress import Cancelled
from deployments.weights import EMULATED_PREFIX

MODES = ("general", "character", "style", "product", "edit")
FINETUNE_TYPES = ("lora", "full")
PRIORITIES = ("quality", "speed")
DEFAULT_TRIGGER_WORD = "TOK"
MIN_ITERATIONS, MAX_ITERATIONS = 1, 2000  # BFL takes 100..1000; fewer for quick checks, more as the offline default
DEFAULT_LORA_RANK = 32  # BFL's default (16 is its other choice)
FULL_RANK = 128  # "full" is trained as a high-rank LoRA, as BFL extracts a full finetune to a LoRA
STRENGTHS = (0.75, 1.0, 1.25, 1.5)  # swept after training on the served model; the best is the default
OFFLINE_ITERATIONS = 1500  # what teaches the offline model its proof concept in a few CPU minutes (bench/finetune.py)
MAX_STRENGTH = 2.0  # BFL's finetune_strength range is 0..2


class FinetuneStopped(Cancelled):
    """Raised by the trainer at the step after `should_stop()` turned true; `step` is the last step done.
    A subclass of `deployments.progress.Cancelled`, so a job core that stops generations stops these too."""

    def __init__(self, step: int, of: int):
        super().__init__(f"fine-tuning stopped on request after step {step} of {of}")
        self.step, self.of = step, of


@dataclass(frozen=True)
class FinetuneExample:
    """One training item, as bytes: an image and its caption (None: written by captioning). In edit mode
    `image_png` is the source (the reference the model sees) and `target_png` what the edit makes of it."""

    name: str
    image_png: bytes
    caption: str | None = None
    target_png: bytes | None = None


@dataclass(frozen=True)
class FinetuneParams:
    """Every setting of one finetune, decided at submit. `model` is the served model the adapter is for (its
    metadata's base_model, so the denoiser accepts it there); `base_variant` and `weights` are what it trains on
    (klein Base for a distilled model, or the model itself; on the offline model both are one checkpoint). The
    strength sweep after training runs on the served model: `model` with `served_weights`."""

    finetune_id: str
    model: str
    base_variant: str
    weights: str
    mode: str
    trigger_word: str
    iterations: int
    learning_rate: float
    lora_rank: int
    priority: str = "quality"
    finetune_type: str = "lora"
    captioning: bool = True
    sample_every: int = 50
    checkpoint_every: int = 50
    sample_prompts: tuple[str, ...] = ()
    seed: int = 0
    served_weights: str | None = None  # the served model's weights where they differ from `weights` (real Base
    # and distilled checkpoints); None: the served model runs `weights` too, as the offline model does

    @property
    def rank(self) -> int:
        """The rank trained: `lora_rank`, or FULL_RANK for a "full" finetune."""
        return FULL_RANK if self.finetune_type == "full" else self.lora_rank


@dataclass(frozen=True)
class FinetuneEvent:
    """One report of a running finetune. Every event has step/of (and the loss when a step ran); a sample
    image comes every `sample_every` steps (the first one early), checkpoint bytes every `checkpoint_every`
    steps (pass them back as `resume` to continue from `step`), and only the last event has the adapter file
    bytes, its `default_strength` and `details` (what was trained: targets, rank, base, captions, timings)."""

    step: int
    of: int
    loss: float | None = None
    sample_png: bytes | None = None
    sample_prompt: str | None = None
    checkpoint: bytes | None = None
    adapter: bytes | None = None
    default_strength: float | None = None
    details: dict | None = None

    @property
    def final(self) -> bool:
        return self.adapter is not None


def is_offline_model(weights: str) -> bool:
    """The shipped shapes model, whose small size trains at other settings than real klein weights."""
    return weights == EMULATED_PREFIX


def default_learning_rate(mode: str, finetune_type: str = "lora", weights: str = "") -> float:
    """BFL's defaults (1e-4 for a LoRA, 1e-5 for a full finetune, whose high rank moves more per step); the
    offline model's 5M-parameter transformer needs a larger step to learn a concept in minutes."""
    check_choice("mode", mode, MODES)
    if is_offline_model(weights):
        return 2e-3
    return 1e-5 if finetune_type == "full" else 1e-4


def default_iterations(weights: str = "", priority: str = "quality") -> int:
    """BFL's 300 steps (a "speed" finetune takes half); the offline model's default is what learns its
    proof concept in a few CPU minutes (bench/finetune.py)."""
    check_choice("priority", priority, PRIORITIES)
    iterations = OFFLINE_ITERATIONS if is_offline_model(weights) else 300
    return iterations // 2 if priority == "speed" else iterations


MODE_CAPTIONS = {
    "general": "a picture of {trigger}",
    "character": "{trigger}, a character",
    "style": "an image in the style of {trigger}",
    "product": "a product photo of {trigger}",
    "edit": "{trigger}",
}
_WORDS = re.compile(r"[A-Za-z]{2,}")


def caption_template(mode: str, trigger_word: str, name: str) -> str:
    """A caption written without looking at the image: the mode's phrase around the trigger word, plus the
    file name's words when it reads like a description ("red_apple.png" -> "..., red apple"; "IMG_0042.jpg"
    adds nothing). Honest about what it knows; a real captioner would describe the picture."""
    check_choice("mode", mode, MODES)
    caption = MODE_CAPTIONS[mode].format(trigger=trigger_word)
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    words = [word.lower() for word in _WORDS.findall(stem) if word.lower() not in {"img", "dsc", "image", "photo"}]
    digits = sum(character.isdigit() for character in stem)
    if words and digits <= len(stem) // 2:
        caption += ", " + " ".join(words)
    return caption


def check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{field} {value!r} is not one of {', '.join(choices)}; use one of them.")
