"""Emulated FLUX.2 [klein] checkpoints: the real architecture at a tiny size, random weights.

They are written in `save_pretrained` layout and loaded through the same
`Flux2KleinPipeline.from_pretrained` path real weights use, so every code path runs for
real on a CPU-only, offline machine. Geometry is kept: the VAE downsamples 8x and the
transformer sees 2x2 patches, so token counts grow with resolution as in the real model.
Each variant keeps its real structure at scale: its own encoder family, and the 9B
transformer wider and deeper than the 4B one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
from transformers import Qwen3Config, Qwen3ForCausalLM

from deployments.registry import KLEIN_4B, KLEIN_9B, VariantSpec
from deployments.tokenizer import train_tokenizer
from deployments.weights import SETTINGS_FILENAME

BUILDER_VERSION = 1
DEFAULT_CACHE_DIR = Path(os.environ.get("FLUX_SERVE_CACHE", Path.home() / ".cache" / "flux-serve"))


@dataclass(frozen=True)
class EncoderShape:
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    head_dim: int
    intermediate_size: int


@dataclass(frozen=True)
class TransformerShape:
    num_attention_heads: int
    attention_head_dim: int
    num_double_blocks: int
    num_single_blocks: int


@dataclass(frozen=True)
class VaeShape:
    block_out_channels: tuple[int, ...]
    norm_num_groups: int
    latent_channels: int


@dataclass(frozen=True)
class EmulatedSize:
    """One emulation size: an encoder and transformer shape per variant, one VAE, one text length."""

    encoders: dict[str, EncoderShape]
    transformers: dict[str, TransformerShape]
    vae: VaeShape
    max_sequence_length: int


# Encoder widths keep Qwen3-4B : Qwen3-8B = 2560 : 4096 roughly; transformer widths keep
# 3072 : 4096, depths keep 5+20 vs 8+24 blocks roughly. `small` keeps the real 512 text tokens,
# so text and image token counts, and the encoder's share of the work, stay realistic.
SIZES: dict[str, EmulatedSize] = {
    "tiny": EmulatedSize(
        encoders={"qwen3-4b": EncoderShape(40, 4, 4, 8, 96), "qwen3-8b": EncoderShape(64, 4, 4, 16, 128)},
        transformers={
            "flux-2-klein-4b": TransformerShape(3, 16, 1, 4),
            "flux-2-klein-9b": TransformerShape(4, 16, 2, 5),
        },
        vae=VaeShape((8, 16, 32, 32), norm_num_groups=8, latent_channels=8),
        max_sequence_length=64,
    ),
    "small": EmulatedSize(
        encoders={"qwen3-4b": EncoderShape(128, 8, 8, 16, 384), "qwen3-8b": EncoderShape(192, 8, 12, 16, 576)},
        transformers={
            "flux-2-klein-4b": TransformerShape(6, 32, 2, 8),
            "flux-2-klein-9b": TransformerShape(8, 32, 3, 10),
        },
        vae=VaeShape((16, 32, 32, 32), norm_num_groups=8, latent_channels=16),
        max_sequence_length=512,
    ),
    # The offline default model trained on the shapes world (training/shapes_model.py):
    # 64x64 images are 16 image tokens, captions fit in 32 text tokens.
    "shapes": EmulatedSize(
        encoders={"qwen3-4b": EncoderShape(64, 4, 4, 16, 128), "qwen3-8b": EncoderShape(64, 4, 4, 16, 128)},
        transformers={
            "flux-2-klein-4b": TransformerShape(3, 64, 2, 5),
            "flux-2-klein-9b": TransformerShape(3, 64, 2, 5),
        },
        vae=VaeShape((16, 32, 64, 64), norm_num_groups=8, latent_channels=8),
        max_sequence_length=32,
    ),
}


def encoder_out_layers(num_layers: int) -> tuple[int, int, int]:
    """Hidden states at a quarter, half and three quarters of the depth, as (9, 18, 27) of 36."""
    return (num_layers // 4, num_layers // 2, 3 * num_layers // 4)


def transformer_shape_of(shape: EmulatedSize, variant: VariantSpec) -> TransformerShape:
    """The Base and KV variants run the transformer of the distilled variant of their size, emulated alike."""
    distilled = {KLEIN_4B: "flux-2-klein-4b", KLEIN_9B: "flux-2-klein-9b"}
    return shape.transformers[distilled[variant.transformer]]


class UnknownEmulationSizeError(ValueError):
    """An emulation size that is not defined."""


def get_size(size: str) -> EmulatedSize:
    try:
        return SIZES[size]
    except KeyError:
        raise UnknownEmulationSizeError(f"Unknown emulation size {size!r}. Use one of: {', '.join(SIZES)}.") from None


def _fingerprint(variant: VariantSpec, size: str) -> str:
    spec = {"builder": BUILDER_VERSION, "variant": variant.name, "size": asdict(get_size(size))}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=list).encode()).hexdigest()[:12]


def build_components(variant: VariantSpec, size: str, seed: int = 0) -> Flux2KleinPipeline:
    """Create the five pipeline components with seeded random weights."""
    shape = get_size(size)
    encoder_shape = shape.encoders[variant.text_encoder.family]
    transformer_shape = transformer_shape_of(shape, variant)
    tokenizer = train_tokenizer()

    torch.manual_seed(seed)
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=encoder_shape.hidden_size,
            intermediate_size=encoder_shape.intermediate_size,
            num_hidden_layers=encoder_shape.num_layers,
            num_attention_heads=encoder_shape.num_attention_heads,
            num_key_value_heads=max(1, encoder_shape.num_attention_heads // 2),
            head_dim=encoder_shape.head_dim,
            max_position_embeddings=4 * shape.max_sequence_length,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )

    torch.manual_seed(seed + 1)
    head_dim = transformer_shape.attention_head_dim
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=shape.vae.latent_channels * 4,
        num_layers=transformer_shape.num_double_blocks,
        num_single_layers=transformer_shape.num_single_blocks,
        attention_head_dim=head_dim,
        num_attention_heads=transformer_shape.num_attention_heads,
        joint_attention_dim=encoder_shape.hidden_size * len(encoder_out_layers(encoder_shape.num_layers)),
        timestep_guidance_channels=64,
        axes_dims_rope=(head_dim // 4,) * 4,
        guidance_embeds=False,
    )

    torch.manual_seed(seed + 2)
    blocks = len(shape.vae.block_out_channels)
    vae = AutoencoderKLFlux2(
        block_out_channels=shape.vae.block_out_channels,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=1,
        latent_channels=shape.vae.latent_channels,
        norm_num_groups=shape.vae.norm_num_groups,
        sample_size=256,
    )

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    return Flux2KleinPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=variant.distilled,
    )


def build_checkpoint(variant: VariantSpec, size: str, out_dir: Path) -> Path:
    """Write an emulated checkpoint for `variant` into `out_dir` (deterministic, offline)."""
    pipeline = build_components(variant, size)
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    settings = {
        "emulated": True,
        "variant": variant.name,
        "size": size,
        "text_encoder_family": variant.text_encoder.family,
        "distilled": variant.distilled,
        "max_sequence_length": get_size(size).max_sequence_length,
        "text_encoder_out_layers": list(
            encoder_out_layers(get_size(size).encoders[variant.text_encoder.family].num_layers)
        ),
        "description": (
            f"emulated {variant.name} ({size}): real FLUX.2 [klein] architecture at a tiny size with "
            "random weights; images are noise, timings and code paths are real"
        ),
    }
    (Path(out_dir) / SETTINGS_FILENAME).write_text(json.dumps(settings, indent=2, sort_keys=True))
    return Path(out_dir)


def emulated_checkpoint(variant: VariantSpec, size: str = "tiny", cache_dir: Path | None = None) -> Path:
    """Path of the cached emulated checkpoint, building it on first use.

    Several replicas may ask at once: each builds into its own temporary folder and the
    first atomic rename wins.
    """
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR) / "emulated"
    target = cache_dir / f"{variant.name}-{size}-{_fingerprint(variant, size)}"
    if (target / SETTINGS_FILENAME).exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
    try:
        build_checkpoint(variant, size, staging)
        os.rename(staging, target)
    except OSError:
        if not (target / SETTINGS_FILENAME).exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
