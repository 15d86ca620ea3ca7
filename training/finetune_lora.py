"""The LoRA both trainers share (flux-lora and the finetune worker): where it goes, how it learns, how it is saved.

As diffusers' train_dreambooth_lora_flux2_klein.py trains klein: a peft LoRA on the attention projections of every
block (the single blocks' fused qkv+MLP input and output included) and, as the design asks, on the double blocks'
MLPs too; the base frozen in its serving dtype, the adapter in fp32; AdamW, or bitsandbytes' 8-bit AdamW on a
CUDA GPU when it is installed. The file is what `Flux2KleinPipeline.save_lora_weights` writes, so diffusers'
`load_lora_weights` (the denoiser's) and ComfyUI read it; our metadata rides in its safetensors header.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import torch
from diffusers import Flux2KleinPipeline
from diffusers.training_utils import cast_training_params
from peft import LoraConfig

from lora.adapter_file import ADAPTER_FILENAME, write_metadata

ATTENTION_MODULES = (
    r".*\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out|to_qkv_mlp_proj)$"
    r"|.*single_transformer_blocks\.\d+\.attn\.to_out$"
)
MLP_MODULES = r".*\.(ff|ff_context)\.linear_(in|out)$"
TARGET_MODULES = f"{ATTENTION_MODULES}|{MLP_MODULES}"
WEIGHT_DECAY = 1e-4  # diffusers' DreamBooth default


def add_lora(transformer: torch.nn.Module, rank: int, target_modules: str = TARGET_MODULES) -> list[torch.nn.Parameter]:
    """Freeze the transformer, add a rank-`rank` adapter (alpha = rank, so strength 1 is the trained scale) and
    return its parameters, in fp32 whatever the base's dtype."""
    transformer.requires_grad_(False)
    transformer.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=target_modules)
    )
    cast_training_params(transformer, torch.float32)
    return [parameter for parameter in transformer.parameters() if parameter.requires_grad]


def adapted_modules(transformer: torch.nn.Module) -> list[str]:
    """The names of the modules the adapter sits on (for a finetune's details)."""
    return sorted({name.rsplit(".lora_A", 1)[0] for name, _ in transformer.named_parameters() if ".lora_A" in name})


def eight_bit_adam_available(device: torch.device) -> bool:
    return device.type == "cuda" and importlib.util.find_spec("bitsandbytes") is not None


def make_optimizer(
    parameters: list[torch.nn.Parameter], learning_rate: float, device: torch.device
) -> torch.optim.Optimizer:
    """8-bit AdamW on a CUDA GPU when bitsandbytes is installed (a quarter of the optimizer memory), else AdamW."""
    if eight_bit_adam_available(device):
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(parameters, lr=learning_rate, weight_decay=WEIGHT_DECAY)
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=WEIGHT_DECAY)


def write_adapter(folder: Path, lora_layers: dict[str, torch.Tensor], metadata: dict) -> Path:
    """The adapter file in `folder` (diffusers' name and layout), with `metadata` in its header."""
    Flux2KleinPipeline.save_lora_weights(folder, transformer_lora_layers=lora_layers)
    write_metadata(folder / ADAPTER_FILENAME, metadata)
    return folder / ADAPTER_FILENAME


def adapter_bytes(lora_layers: dict[str, torch.Tensor], metadata: dict) -> bytes:
    """The adapter file's bytes, for a caller that stores it itself (the finetune job's storage)."""
    with tempfile.TemporaryDirectory(prefix="flux-serve-adapter-") as folder:
        return write_adapter(Path(folder), lora_layers, metadata).read_bytes()
