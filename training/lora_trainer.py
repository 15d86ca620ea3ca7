"""`flux-lora train`: a LoRA for one klein variant, with diffusers + peft and FLUX's objective.

The adapter is saved with `Flux2KleinPipeline.save_lora_weights`, so diffusers' own
`load_lora_weights` reads it back; its base model and trigger word go into the file's
metadata and a model card README.md ready for the Hugging Face hub.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import Flux2KleinPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from tqdm import tqdm

from deployments.loading import load_pipeline, pick_device, resolve_weights
from deployments.registry import get_variant
from lora.adapter_file import ADAPTER_FILENAME, write_metadata
from training.card import model_card
from training.dataset import load_examples, to_pixels
from training.flow_matching import flow_matching_loss, images_to_tokens, token_ids

TARGET_MODULES = (
    r".*\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out|to_qkv_mlp_proj)$"
    r"|.*single_transformer_blocks\.\d+\.attn\.to_out$"
)


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
    license: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class TrainingResult:
    config: LoraTrainingConfig
    adapter_path: Path
    card_path: Path
    losses: list[float]
    seconds: float


def with_trigger(caption: str, trigger_word: str) -> str:
    return caption if trigger_word.lower() in caption.lower() else f"{trigger_word}, {caption}"


def train_lora(config: LoraTrainingConfig, show_progress: bool = True) -> TrainingResult:
    started = time.time()
    variant = get_variant(config.model)
    weights = resolve_weights(variant, config.weights)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    pipeline = load_pipeline(weights, pick_device("cpu"), torch.float32)

    examples = load_examples(Path(config.data))
    captions = [with_trigger(caption, config.trigger_word) for _, caption in examples]
    with torch.no_grad():
        prompt_embeds, _ = pipeline.encode_prompt(
            prompt=captions,
            device=torch.device("cpu"),
            max_sequence_length=weights.max_sequence_length,
            text_encoder_out_layers=weights.text_encoder_out_layers,
        )
        tokens = images_to_tokens(pipeline.vae, to_pixels([image for image, _ in examples], config.resolution))

    transformer = pipeline.transformer
    transformer.requires_grad_(False)
    transformer.add_adapter(
        LoraConfig(r=config.rank, lora_alpha=config.rank, init_lora_weights="gaussian", target_modules=TARGET_MODULES)
    )
    trainable = [parameter for parameter in transformer.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    side_tokens = config.resolution // pipeline.vae_scale_factor // 2
    batch = min(config.batch_size, len(examples))
    image_ids, text_ids = token_ids(batch, side_tokens, side_tokens, prompt_embeds.shape[1])
    losses = []
    transformer.train()
    for _ in tqdm(range(config.steps), desc=f"LoRA {config.trigger_word}", disable=not show_progress):
        rows = torch.randperm(len(examples), generator=generator)[:batch]
        loss = flow_matching_loss(transformer, tokens[rows], prompt_embeds[rows], image_ids, text_ids, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    transformer.eval()

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    Flux2KleinPipeline.save_lora_weights(out, transformer_lora_layers=get_peft_model_state_dict(transformer))
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
    write_metadata(out / ADAPTER_FILENAME, metadata)
    card_path = out / "README.md"
    card_path.write_text(model_card(metadata, losses))
    return TrainingResult(config, out / ADAPTER_FILENAME, card_path, losses, time.time() - started)
