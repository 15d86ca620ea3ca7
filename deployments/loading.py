"""Resolving weights (building an emulated checkpoint where asked) and loading them into a diffusers pipeline
on a device: the workers' side, which needs torch; describing weights is `deployments.weights`, torch-free."""

from __future__ import annotations

from pathlib import Path

import diffusers
import torch

from deployments.registry import VariantSpec
from deployments.weights import (
    EMULATED_PREFIX,
    REAL_SIZE,
    ResolvedWeights,
    WeightsError,
    describe_weights,
    from_folder,
    is_emulated,
    settings_to_weights,
    trained_checkpoint,
)


def resolve_weights(variant: VariantSpec, weights: str, cache_dir: Path | None = None) -> ResolvedWeights:
    """Turn a `weights:` setting into a source for `from_pretrained` plus its settings."""
    if weights == EMULATED_PREFIX:
        return from_folder(variant, trained_checkpoint())
    if weights == REAL_SIZE:
        return describe_weights(variant, weights)
    if is_emulated(weights):
        from deployments.emulation import emulated_checkpoint, get_size  # builds with torch: only here

        size = weights.partition(":")[2]
        get_size(size)
        return from_folder(variant, emulated_checkpoint(variant, size, cache_dir))
    path = Path(weights).expanduser()
    if path.exists():
        if not (path / "model_index.json").exists():
            raise WeightsError(
                f"{weights!r} is a folder without model_index.json; point weights at a diffusers "
                "checkpoint folder (the one save_pretrained writes)."
            )
        return from_folder(variant, path)
    if weights.count("/") != 1 or weights.startswith((".", "/", "~")):
        raise WeightsError(
            f"weights {weights!r} is neither 'emulated', 'emulated:tiny|small|shapes|real', an existing folder, "
            "nor a Hugging Face id like 'black-forest-labs/FLUX.2-klein-4B'."
        )
    return settings_to_weights(variant, weights, {}, f"{weights} (Hugging Face hub)")


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    """bf16 on GPU as the model cards use; fp32 on CPU, where bf16 matmuls are slow."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def pipeline_class(weights: ResolvedWeights, for_encoder: bool = False) -> type[diffusers.DiffusionPipeline]:
    """The diffusers pipeline the variant's spec names for the denoiser (or the text encoder); every klein
    pipeline loads the same components."""
    spec = weights.spec
    return getattr(diffusers, spec.encoder_pipeline_class if for_encoder else spec.pipeline_class)


def load_pipeline(
    weights: ResolvedWeights, device: torch.device, dtype: torch.dtype, for_encoder: bool = False, **left_out: None
) -> diffusers.DiffusionPipeline:
    """`from_pretrained` of the spec's pipeline class, with the components named in `left_out`
    (e.g. transformer=None) skipped."""
    if weights.source == REAL_SIZE:
        return _build_real_size(weights, device, dtype, for_encoder, left_out)
    try:
        pipeline = pipeline_class(weights, for_encoder).from_pretrained(weights.source, dtype=dtype, **left_out)
    except (OSError, ValueError) as error:
        raise WeightsError(
            f"Could not load weights for {weights.variant} from {weights.source!r}: {error}. "
            "Download them first (huggingface-cli download ...) and set weights to the local "
            "folder, or use weights: emulated."
        ) from error
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def _build_real_size(
    weights: ResolvedWeights, device: torch.device, dtype: torch.dtype, for_encoder: bool, left_out: dict
):
    from deployments.real_size import build_real_size_pipeline

    if device.type != "cuda":
        raise WeightsError(
            f"{REAL_SIZE} builds {weights.variant} at full size (billions of parameters) in memory; it "
            "needs a CUDA GPU. On a CPU use emulated:small for timings."
        )
    return build_real_size_pipeline(weights.spec, device, dtype, for_encoder=for_encoder, **left_out)
