"""Where a variant's weights come from: `emulated[:size]`, a local folder, or a Hugging Face id.

`emulated` is the small model this project trained on the shapes world and ships in
`deployments/checkpoints/` (it stands in for every variant); `emulated:tiny|small|shapes`
are random-weight checkpoints of the real architecture, built offline, for tests and timings;
`emulated:real` is the real size with random weights, built in GPU memory, for GPU timings.

Both workers go through `load_pipeline`, which is `Flux2KleinPipeline.from_pretrained` with
the parts they do not need left out, so emulated and real weights share one code path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import Flux2KleinPipeline

from deployments.contracts import GenerationDefaults
from deployments.emulation import SETTINGS_FILENAME, emulated_checkpoint, get_size
from deployments.registry import ModelVariant

EMULATED_PREFIX = "emulated"
TRAINED_CHECKPOINT = Path(__file__).parent / "checkpoints" / "flux2-klein-shapes"
REAL_SIZE = "emulated:real"


class WeightsError(ValueError):
    """Weights that cannot be found or loaded."""


@dataclass(frozen=True)
class ResolvedWeights:
    """What backs a variant, and the settings its encoder and denoiser must agree on."""

    variant: str
    source: str
    emulated: bool
    description: str
    text_encoder_family: str
    max_sequence_length: int
    text_encoder_out_layers: tuple[int, ...]
    defaults: GenerationDefaults


def _is_emulated(weights: str) -> bool:
    return weights == EMULATED_PREFIX or weights.startswith(EMULATED_PREFIX + ":")


def draws_noise(weights: str) -> bool:
    """Random-weight checkpoints: their images say nothing about quality, only about speed."""
    return _is_emulated(weights) and weights != EMULATED_PREFIX


def _trained_checkpoint() -> Path:
    if not (TRAINED_CHECKPOINT / "model_index.json").exists():
        raise WeightsError(
            f"The trained offline model is missing from {TRAINED_CHECKPOINT}; restore it from the "
            "repository, train it again (python -m training.shapes_model), or use weights: emulated:tiny."
        )
    return TRAINED_CHECKPOINT


def resolve_weights(variant: ModelVariant, weights: str, cache_dir: Path | None = None) -> ResolvedWeights:
    """Turn a `weights:` setting into a source for `from_pretrained` plus its settings."""
    if weights == EMULATED_PREFIX:
        return _from_folder(variant, _trained_checkpoint())
    if weights == REAL_SIZE:
        return describe_weights(variant, weights)
    if _is_emulated(weights):
        size = weights.partition(":")[2]
        get_size(size)
        return _from_folder(variant, emulated_checkpoint(variant, size, cache_dir))
    path = Path(weights).expanduser()
    if path.exists():
        if not (path / "model_index.json").exists():
            raise WeightsError(
                f"{weights!r} is a folder without model_index.json; point weights at a diffusers "
                "checkpoint folder (the one save_pretrained writes)."
            )
        return _from_folder(variant, path)
    if weights.count("/") != 1 or weights.startswith((".", "/", "~")):
        raise WeightsError(
            f"weights {weights!r} is neither 'emulated', 'emulated:tiny|small|shapes|real', an existing folder, "
            "nor a Hugging Face id like 'black-forest-labs/FLUX.2-klein-4B'."
        )
    return _settings_to_weights(variant, weights, {}, f"{weights} (Hugging Face hub)")


def describe_weights(variant: ModelVariant, weights: str) -> ResolvedWeights:
    """What `resolve_weights` would say, without building or loading anything (for the ingress)."""
    if weights == EMULATED_PREFIX:
        return _from_folder(variant, _trained_checkpoint())
    if weights == REAL_SIZE:
        description = (
            f"emulated (real size): {variant.name}'s full architecture with random weights, built in "
            "GPU memory; images are noise, latency, memory and cost are real"
        )
        return _settings_to_weights(variant, weights, {"emulated": True}, description)
    if _is_emulated(weights):
        size = weights.partition(":")[2]
        description = (
            f"emulated ({size}): the real FLUX.2 [klein] architecture at a tiny size with random "
            "weights, built offline; images are noise, code paths and timings are real"
        )
        return _settings_to_weights(variant, weights, {"emulated": True, "distilled": variant.distilled}, description)
    if (Path(weights).expanduser() / "model_index.json").exists():
        return _from_folder(variant, Path(weights).expanduser())
    return _settings_to_weights(variant, weights, {}, f"real weights from {weights}")


def _from_folder(variant: ModelVariant, folder: Path) -> ResolvedWeights:
    settings_file = folder / SETTINGS_FILENAME
    settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
    return _settings_to_weights(
        variant, str(folder), settings, settings.get("description", f"local checkpoint {folder}")
    )


def _settings_to_weights(variant: ModelVariant, source: str, settings: dict, description: str) -> ResolvedWeights:
    native_side_px = int(settings.get("native_side_px", 1024))
    return ResolvedWeights(
        variant=variant.name,
        source=source,
        emulated=bool(settings.get("emulated", False)),
        description=description,
        text_encoder_family=settings.get("text_encoder_family", variant.text_encoder.family),
        max_sequence_length=int(settings.get("max_sequence_length", variant.text_encoder.max_sequence_length)),
        text_encoder_out_layers=tuple(settings.get("text_encoder_out_layers", variant.text_encoder.out_layers)),
        defaults=GenerationDefaults(
            steps=int(settings.get("default_steps", variant.default_steps)),
            guidance=float(settings.get("default_guidance", variant.default_guidance)),
            distilled=bool(settings.get("distilled", variant.distilled)),
            width=native_side_px,
            height=native_side_px,
            edit_guidance=float(settings["default_edit_guidance"]) if "default_edit_guidance" in settings else None,
        ),
    )


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    """bf16 on GPU as the model cards use; fp32 on CPU, where bf16 matmuls are slow."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def load_pipeline(
    weights: ResolvedWeights, device: torch.device, dtype: torch.dtype, **left_out: None
) -> Flux2KleinPipeline:
    """`from_pretrained` with the components named in `left_out` (e.g. transformer=None) skipped."""
    if weights.source == REAL_SIZE:
        return _build_real_size(weights, device, dtype, left_out)
    try:
        pipeline = Flux2KleinPipeline.from_pretrained(weights.source, dtype=dtype, **left_out)
    except (OSError, ValueError) as error:
        raise WeightsError(
            f"Could not load weights for {weights.variant} from {weights.source!r}: {error}. "
            "Download them first (huggingface-cli download ...) and set weights to the local "
            "folder, or use weights: emulated."
        ) from error
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def _build_real_size(weights: ResolvedWeights, device: torch.device, dtype: torch.dtype, left_out: dict):
    from deployments.real_size import build_real_size_pipeline
    from deployments.registry import get_variant

    if device.type != "cuda":
        raise WeightsError(
            f"{REAL_SIZE} builds {weights.variant} at full size (billions of parameters) in memory; it "
            "needs a CUDA GPU. On a CPU use emulated:small for timings."
        )
    return build_real_size_pipeline(get_variant(weights.variant), device, dtype, **left_out)
