"""The model variants we serve and the facts each one carries.

Facts come from the FLUX.2 [klein] model cards and diffusers' conversion script:
hidden sizes, block counts, text encoder and its hidden-state layers, licenses and
sampling defaults. The distilled klein models take 4 steps and ignore guidance, while
`Flux2KleinPipeline.__call__` defaults to 50 steps and guidance 4.0 (the Base models'
settings), so the defaults here are always passed explicitly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from deployments.contracts import Capabilities
from deployments.costs import KLEIN_4B_COST, KLEIN_9B_COST, KLEIN_9B_KV_COST, CostFigures


class UnknownModelError(ValueError):
    """A model name that is not in the registry."""


@dataclass(frozen=True)
class TransformerSize:
    hidden_size: int
    num_attention_heads: int
    attention_head_dim: int
    num_double_blocks: int
    num_single_blocks: int


@dataclass(frozen=True)
class TextEncoderSpec:
    family: str
    hf_repo: str
    hidden_size: int
    num_layers: int
    out_layers: tuple[int, ...]
    max_sequence_length: int

    @property
    def embedding_dim(self) -> int:
        """Width of one token embedding: the chosen hidden states stacked side by side."""
        return self.hidden_size * len(self.out_layers)


@dataclass(frozen=True)
class VariantSpec:
    """One servable model: everything the registry, `/v1/models`, request validation and the denoiser's
    call read about it. A new variant is a new entry below; no code asks for a variant by name.

    `name` is the served name, `source` where its weights come from by default (a Hugging Face id): an
    operator serves their own checkpoint under a name of their own (`models: {name: {variant, weights}}`).
    `pipeline_class` is the diffusers pipeline that runs it, by name, so this module needs no torch.
    """

    name: str
    source: str
    pipeline_class: str
    license: str
    commercial_use: bool
    default_steps: int
    default_guidance: float
    capabilities: Capabilities
    text_encoder: TextEncoderSpec
    transformer: TransformerSize
    cost: CostFigures
    # The text encoder's side loads this pipeline without its transformer (encode_prompt is klein's own; the KV
    # pipeline cannot be built without a transformer)
    encoder_pipeline_class: str = "Flux2KleinPipeline"
    registry_name: str = ""  # set by served_as: the entry below this spec came from

    @property
    def distilled(self) -> bool:
        return self.capabilities.distilled

    @property
    def base_name(self) -> str:
        """The registry's name of this variant, whatever it is served as."""
        return self.registry_name or self.name

    def served_as(self, name: str) -> VariantSpec:
        """This spec under an operator's own served name."""
        return replace(self, name=name, registry_name=self.base_name)

    def describe(self) -> dict:
        return asdict(self)


QWEN3_4B = TextEncoderSpec(
    family="qwen3-4b",
    hf_repo="Qwen/Qwen3-4B",
    hidden_size=2560,
    num_layers=36,
    out_layers=(9, 18, 27),
    max_sequence_length=512,
)
QWEN3_8B = TextEncoderSpec(
    family="qwen3-8b",
    hf_repo="Qwen/Qwen3-8B",
    hidden_size=4096,
    num_layers=36,
    out_layers=(9, 18, 27),
    max_sequence_length=512,
)

KLEIN_4B = TransformerSize(3072, 24, 128, 5, 20)
KLEIN_9B = TransformerSize(4096, 32, 128, 8, 24)
FLUX_NON_COMMERCIAL = "FLUX Non-Commercial License"
# Distilled klein: 4 steps, guidance baked in (the pipeline skips CFG for real distilled weights; a
# checkpoint that says it is not distilled, as the offline one, runs CFG through the same call).
DISTILLED = Capabilities(distilled=True, guidance=True, negative_prompt=True)
# klein Base: the undistilled models, 50 steps with classifier-free guidance (two passes a step).
BASE = Capabilities(distilled=False, guidance=True, negative_prompt=True)
# klein 9B-KV: the references' keys and values are computed at the first step and reused after it;
# Flux2KleinKVPipeline takes no guidance, no negative prompt and has no inpainting twin.
KV = Capabilities(distilled=True, guidance=False, negative_prompt=False, mask=False, kv_reference_cache=True)


KLEIN_4B_SPEC = VariantSpec(
    name="flux-2-klein-4b",
    source="black-forest-labs/FLUX.2-klein-4B",
    pipeline_class="Flux2KleinPipeline",
    license="Apache-2.0",
    commercial_use=True,
    default_steps=4,
    default_guidance=1.0,
    capabilities=DISTILLED,
    text_encoder=QWEN3_4B,
    transformer=KLEIN_4B,
    cost=KLEIN_4B_COST,
)
KLEIN_9B_SPEC = replace(
    KLEIN_4B_SPEC,
    name="flux-2-klein-9b",
    source="black-forest-labs/FLUX.2-klein-9B",
    license=FLUX_NON_COMMERCIAL,
    commercial_use=False,
    text_encoder=QWEN3_8B,
    transformer=KLEIN_9B,
    cost=KLEIN_9B_COST,
)
# The Base models: the same transformers, undistilled (50 steps, CFG); per step they cost what theirs do.
BASE_DEFAULTS = {"default_steps": 50, "default_guidance": 4.0, "capabilities": BASE}

VARIANTS: dict[str, VariantSpec] = {
    spec.name: spec
    for spec in (
        KLEIN_4B_SPEC,
        KLEIN_9B_SPEC,
        replace(
            KLEIN_4B_SPEC, name="flux-2-klein-base-4b", source="black-forest-labs/FLUX.2-klein-base-4B", **BASE_DEFAULTS
        ),
        replace(
            KLEIN_9B_SPEC, name="flux-2-klein-base-9b", source="black-forest-labs/FLUX.2-klein-base-9B", **BASE_DEFAULTS
        ),
        replace(
            KLEIN_9B_SPEC,
            name="flux-2-klein-9b-kv",
            source="black-forest-labs/FLUX.2-klein-9B-KV",
            pipeline_class="Flux2KleinKVPipeline",
            capabilities=KV,
            cost=KLEIN_9B_KV_COST,
        ),
    )
}
# What a config that names no models serves: the two distilled models, as before the specs.
DEFAULT_SERVED = ("flux-2-klein-4b", "flux-2-klein-9b")


def get_variant(name: str) -> VariantSpec:
    try:
        return VARIANTS[name]
    except KeyError:
        known = ", ".join(sorted(VARIANTS))
        raise UnknownModelError(f"Unknown model {name!r}. Use one of: {known}.") from None


def spec_of(model: str | VariantSpec) -> VariantSpec:
    """A spec as given (an operator's served name already applied), or the registry's by name."""
    return model if isinstance(model, VariantSpec) else get_variant(model)
