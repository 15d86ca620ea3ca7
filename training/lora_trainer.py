"""`flux-lora train`: a LoRA for one klein variant, with diffusers + peft and FLUX's objective.

The adapter sits on the attention and MLP projections and is saved as the finetune worker saves its own
(training/finetune_lora.py, shared).

The adapter is saved with `Flux2KleinPipeline.save_lora_weights`, so diffusers' own
`load_lora_weights` reads it back; its base model and trigger word go into the file's
metadata and a model card README.md ready for the Hugging Face hub. It trains on a CUDA GPU when
there is one (the base in bf16 as the denoiser loads it, the adapter in fp32), else on the CPU, and
reports every step through the step hook (training/loop.py), so a job can watch and cancel it.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from peft.utils import get_peft_model_state_dict

from deployments.loading import load_pipeline, pick_device, pick_dtype, resolve_weights
from deployments.progress import StepObserver
from deployments.registry import get_variant
from lora.adapter_file import ADAPTER_FILENAME
from training.card import model_card
from training.dataset import load_examples, to_pixels
from training.finetune_data import with_trigger
from training.finetune_lora import add_lora, make_optimizer, write_adapter
from training.flow_matching import flow_matching_loss, images_to_tokens, token_ids
from training.loop import Observers, TqdmObserver, optimizer_step, run_steps

CARD_FILENAME = "README.md"


@dataclass
class LoraTrainingConfig:
    model: str
    data: Path
    out: Path
    trigger_word: str
    weights: str = "emulated"
    rank: int = 8
    steps: int = 100
    learning_rate: float = 1e-3
    resolution: int = 64
    batch_size: int = 4
    seed: int = 0
    device: str = "auto"  # a CUDA GPU when there is one (deployments.loading.pick_device)
    dtype: str = "auto"  # the base model's: bf16 on a GPU, fp32 on a CPU (pick_dtype); the adapter learns in fp32
    license: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class TrainingResult:
    config: LoraTrainingConfig
    adapter_path: Path
    card_path: Path
    losses: list[float]
    seconds: float


def train_lora(
    config: LoraTrainingConfig,
    show_progress: bool = True,
    observer: StepObserver | None = None,
    job_id: str = "",
) -> TrainingResult:
    """Train and save the adapter; each optimizer step is reported to `observer` (and to a tqdm bar when
    `show_progress`) as `Progress(job_id, step, of=config.steps, eta_s)`. When the observer asks to stop,
    `Cancelled` is raised at the next step and nothing is written to `config.out`."""
    started = time.time()
    variant = get_variant(config.model)
    weights = resolve_weights(variant, config.weights)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)  # on the CPU, so a seed draws alike on every device
    device = pick_device(config.device)
    pipeline = load_pipeline(weights, device, pick_dtype(device, config.dtype))

    examples = load_examples(Path(config.data))
    captions = [with_trigger(caption, config.trigger_word) for _, caption in examples]
    with torch.no_grad():
        prompt_embeds, _ = pipeline.encode_prompt(
            prompt=captions,
            device=device,
            max_sequence_length=weights.max_sequence_length,
            text_encoder_out_layers=weights.text_encoder_out_layers,
        )
        pixels = to_pixels([image for image, _ in examples], config.resolution)
        tokens = images_to_tokens(pipeline.vae, pixels.to(device, pipeline.vae.dtype))

    transformer = pipeline.transformer
    trainable = add_lora(transformer, config.rank)  # attention and MLPs, in fp32 over a bf16 base on a GPU
    optimizer = make_optimizer(trainable, config.learning_rate, device)
    side_tokens = config.resolution // pipeline.vae_scale_factor // 2
    batch = min(config.batch_size, len(examples))
    image_ids, text_ids = (ids.to(device) for ids in token_ids(batch, side_tokens, side_tokens, prompt_embeds.shape[1]))
    losses = []

    def step(_: int) -> None:
        rows = torch.randperm(len(examples), generator=generator)[:batch]
        loss = flow_matching_loss(transformer, tokens[rows], prompt_embeds[rows], image_ids, text_ids, generator)
        losses.append(optimizer_step(optimizer, loss))

    bar = TqdmObserver(f"LoRA {config.trigger_word}") if show_progress else None
    transformer.train()
    try:
        run_steps(config.steps, step, Observers(bar, observer), job_id)
    finally:
        transformer.eval()

    metadata = {
        "base_model": variant.name,
        "base_model_repo": variant.source,
        "trigger_word": config.trigger_word,
        "license": config.license or variant.license,
        "tags": config.tags,
        "rank": config.rank,
        "training": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "trained_on_weights": weights.description,
    }
    out = Path(config.out)
    save_adapter(out, get_peft_model_state_dict(transformer), metadata, model_card(metadata, losses))
    return TrainingResult(config, out / ADAPTER_FILENAME, out / CARD_FILENAME, losses, time.time() - started)


def save_adapter(out: Path, lora_layers: dict, metadata: dict, card: str) -> None:
    """The adapter file (diffusers' layout, our metadata in its header) and its card, written in a folder
    beside `out` and moved in file by file, so `out` never holds a half-written adapter."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as staging:
        staged = Path(staging)
        write_adapter(staged, lora_layers, metadata)
        (staged / CARD_FILENAME).write_text(card)
        for name in (ADAPTER_FILENAME, CARD_FILENAME):
            os.replace(staged / name, out / name)
