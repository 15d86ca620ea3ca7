"""Limits of one generation request, checked before any model work, with errors that teach."""

from __future__ import annotations

from dataclasses import dataclass, field

from deployments.encoder import PromptEmbedding

MIN_SIDE_PX = 64
MAX_SIDE_PX = 2048
SIDE_MULTIPLE_PX = 16
MIN_STEPS = 1
MAX_STEPS = 50
MIN_IMAGES = 1
MAX_IMAGES = 12
MAX_SEED = 2**32 - 1  # JSON-safe in every client; image i uses seed + i
OUTPUT_FORMATS = ("jpeg", "png", "webp")


class InvalidRequestError(ValueError):
    """A request field outside what the model accepts; `field` names it for the API error."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter to apply: its registered id, its file and its scale."""

    id: str
    path: str
    scale: float = 1.0


@dataclass
class GenerationRequest:
    """One user request for `num_images` images of one prompt.

    `steps` and `guidance` of None take the variant's defaults; a `seed` of None draws one.
    Image i of a request uses seed + i, so a request's images are reproducible one by one.
    """

    prompt: PromptEmbedding
    width: int = 1024
    height: int = 1024
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    num_images: int = 1
    output_format: str = "jpeg"
    negative_prompt: PromptEmbedding | None = None
    adapters: tuple[AdapterRef, ...] = ()
    request_id: str | None = field(default=None, compare=False)

    def validate(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not MIN_SIDE_PX <= value <= MAX_SIDE_PX or value % SIDE_MULTIPLE_PX:
                raise InvalidRequestError(
                    name,
                    f"{value} is not allowed; use a multiple of {SIDE_MULTIPLE_PX} between "
                    f"{MIN_SIDE_PX} and {MAX_SIDE_PX} pixels.",
                )
        if self.steps is not None and not MIN_STEPS <= self.steps <= MAX_STEPS:
            raise InvalidRequestError("steps", f"{self.steps} is outside {MIN_STEPS}..{MAX_STEPS}.")
        if self.guidance is not None and not 0.0 <= self.guidance <= 20.0:
            raise InvalidRequestError("guidance", f"{self.guidance} is outside 0..20.")
        if not MIN_IMAGES <= self.num_images <= MAX_IMAGES:
            raise InvalidRequestError(
                "num_images", f"{self.num_images} is outside {MIN_IMAGES}..{MAX_IMAGES}."
            )
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise InvalidRequestError("seed", f"{self.seed} is outside 0..{MAX_SEED}.")
        if len({adapter.id for adapter in self.adapters}) != len(self.adapters):
            raise InvalidRequestError("loras", "an adapter is listed twice; list each once with its scale.")
        for adapter in self.adapters:
            if not -4.0 <= adapter.scale <= 4.0:
                raise InvalidRequestError("loras", f"scale {adapter.scale} of {adapter.id!r} is outside -4..4.")
        if self.output_format not in OUTPUT_FORMATS:
            raise InvalidRequestError(
                "output_format", f"{self.output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}."
            )
