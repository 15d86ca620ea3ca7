"""Where a variant's weights come from: `emulated[:size]`, a local folder, or a Hugging Face id.

`emulated` is the small model this project trained on the shapes world and ships in
`deployments/checkpoints/` (it stands in for every variant); `emulated:tiny|small|shapes`
are random-weight checkpoints of the real architecture, built offline, for tests and timings;
`emulated:real` is the real size with random weights, built in GPU memory, for GPU timings.

This module is torch-free (the ingress describes weights with it); the workers load them through
`deployments.loading.load_pipeline`, the spec's pipeline class's `from_pretrained` with the parts
they do not need left out, so emulated and real weights share one code path.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from deployments.contracts import GenerationDefaults
from deployments.registry import VariantSpec

SETTINGS_FILENAME = "flux_serve.json"  # a checkpoint's own settings, beside model_index.json
EMULATED_PREFIX = "emulated"
TRAINED_CHECKPOINT = Path(__file__).parent / "checkpoints" / "flux2-klein-shapes"
REAL_SIZE = "emulated:real"


class WeightsError(ValueError):
    """Weights that cannot be found or loaded."""


@dataclass(frozen=True)
class ResolvedWeights:
    """What backs a variant, and the settings its encoder and denoiser must agree on."""

    variant: str
    spec: VariantSpec
    source: str
    emulated: bool
    description: str
    text_encoder_family: str
    max_sequence_length: int
    text_encoder_out_layers: tuple[int, ...]
    defaults: GenerationDefaults


def is_emulated(weights: str) -> bool:
    return weights == EMULATED_PREFIX or weights.startswith(EMULATED_PREFIX + ":")


def draws_noise(weights: str) -> bool:
    """Random-weight checkpoints: their images say nothing about quality, only about speed."""
    return is_emulated(weights) and weights != EMULATED_PREFIX


def trained_checkpoint() -> Path:
    if not (TRAINED_CHECKPOINT / "model_index.json").exists():
        raise WeightsError(
            f"The trained offline model is missing from {TRAINED_CHECKPOINT}; restore it from the "
            "repository, train it again (python -m training.shapes_model), or use weights: emulated:tiny."
        )
    return TRAINED_CHECKPOINT


OFFLINE_PALETTE_NOTE = (
    "It draws and edits only its own world: its VAE knows 8 colours (red, green, blue, yellow, purple, "
    "orange, white, black) and decodes any other as the nearest of them, so an uploaded photo comes back "
    "repainted in that palette even where an edit leaves it alone."
)


def describe_weights(variant: VariantSpec, weights: str) -> ResolvedWeights:
    """What `resolve_weights` would say, without building or loading anything (for the ingress)."""
    if weights == EMULATED_PREFIX:
        trained = from_folder(variant, trained_checkpoint())
        return dataclasses.replace(trained, description=f"{trained.description} {OFFLINE_PALETTE_NOTE}")
    if weights == REAL_SIZE:
        description = (
            f"emulated (real size): {variant.name}'s full architecture with random weights, built in "
            "GPU memory; images are noise, latency, memory and cost are real"
        )
        return settings_to_weights(variant, weights, {"emulated": True}, description)
    if is_emulated(weights):
        size = weights.partition(":")[2]
        description = (
            f"emulated ({size}): the real FLUX.2 [klein] architecture at a tiny size with random "
            "weights, built offline; images are noise, code paths and timings are real"
        )
        return settings_to_weights(variant, weights, {"emulated": True, "distilled": variant.distilled}, description)
    if (Path(weights).expanduser() / "model_index.json").exists():
        return from_folder(variant, Path(weights).expanduser())
    return settings_to_weights(variant, weights, {}, f"real weights from {weights}")


def from_folder(variant: VariantSpec, folder: Path) -> ResolvedWeights:
    settings_file = folder / SETTINGS_FILENAME
    settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
    return settings_to_weights(
        variant, str(folder), settings, settings.get("description", f"local checkpoint {folder}")
    )


def settings_to_weights(variant: VariantSpec, source: str, settings: dict, description: str) -> ResolvedWeights:
    native_side_px = int(settings.get("native_side_px", 1024))
    return ResolvedWeights(
        variant=variant.name,
        spec=variant,
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
            capabilities=variant.capabilities,
            model=variant.name,
        ),
    )
