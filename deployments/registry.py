"""The model variants we serve and the facts each one carries.

Facts come from the FLUX.2 [klein] model cards and diffusers' conversion script:
hidden sizes, block counts, text encoder and its hidden-state layers, licenses and
sampling defaults. The distilled klein models take 4 steps and ignore guidance, while
`Flux2KleinPipeline.__call__` defaults to 50 steps and guidance 4.0 (the Base models'
settings), so the defaults here are always passed explicitly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
class ModelVariant:
    name: str
    hf_repo: str
    license: str
    commercial_use: bool
    distilled: bool
    default_steps: int
    default_guidance: float
    text_encoder: TextEncoderSpec
    transformer: TransformerSize

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

VARIANTS: dict[str, ModelVariant] = {
    variant.name: variant
    for variant in (
        ModelVariant(
            name="flux-2-klein-4b",
            hf_repo="black-forest-labs/FLUX.2-klein-4B",
            license="Apache-2.0",
            commercial_use=True,
            distilled=True,
            default_steps=4,
            default_guidance=1.0,
            text_encoder=QWEN3_4B,
            transformer=TransformerSize(3072, 24, 128, 5, 20),
        ),
        ModelVariant(
            name="flux-2-klein-9b",
            hf_repo="black-forest-labs/FLUX.2-klein-9B",
            license="FLUX Non-Commercial License",
            commercial_use=False,
            distilled=True,
            default_steps=4,
            default_guidance=1.0,
            text_encoder=QWEN3_8B,
            transformer=TransformerSize(4096, 32, 128, 8, 24),
        ),
    )
}


def get_variant(name: str) -> ModelVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        known = ", ".join(sorted(VARIANTS))
        raise UnknownModelError(f"Unknown model {name!r}. Use one of: {known}.") from None
