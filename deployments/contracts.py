"""What the ingress and the model workers agree on, without torch: limits, parameters, wire messages.

`GenerationParams` is decided once, at submit (every default, the seed, whether CFG runs,
the adapters); the denoiser trusts it and re-derives nothing. `DenoiseJob` carries it with
the prompt embeddings to a denoiser replica; `DenoiseOutcome` comes back.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from deployments.manifest import Manifest  # which imports this module

MIN_SIDE_PX = 64
MAX_PIXELS = 2048 * 2048  # BFL's limit: 4 megapixels in all, in any shape
SIDE_MULTIPLE_PX = 16
MIN_STEPS = 1
MAX_STEPS = 50
MIN_IMAGES = 1
MAX_IMAGES = 12
MAX_GUIDANCE = 20.0
MAX_LORA_SCALE = 4.0
MAX_SEED = 2**32 - 1  # JSON-safe in every client; image i uses seed + i
OutputFormat = Literal["jpeg", "png", "webp"]
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
MEDIA_TYPES = {name: f"image/{name}" for name in OUTPUT_FORMATS}


class InvalidRequestError(ValueError):
    """A request field outside what the model accepts; `field` names it for the API error."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Capabilities:
    """What a variant's pipeline takes; a request asking for more is refused at submit, before any GPU work.

    `distilled` models have guidance baked in (a few steps, no CFG); `guidance` and `negative_prompt` say
    whether the pipeline's call takes `guidance_scale` and `negative_prompt_embeds` at all.
    """

    distilled: bool  # the real weights' nature; a checkpoint's own settings may say otherwise
    guidance: bool
    negative_prompt: bool
    text_to_image: bool = True
    max_references: int = 8  # the pipeline's own limit; the operator's inputs.max_references may be lower
    mask: bool = True
    kv_reference_cache: bool = False

    @property
    def takes_guidance(self) -> bool:
        """The pipeline's call can run classifier-free guidance (guidance_scale and a negative prompt)."""
        return self.guidance and self.negative_prompt

    def check(self, model: str, params: GenerationParams) -> None:
        """Raise InvalidRequestError for what this variant cannot do, saying what to send instead."""
        if not params.references and not self.text_to_image:
            raise InvalidRequestError("input_image", f"{model} edits images only; send an input_image.")
        if len(params.references) > self.max_references:
            raise InvalidRequestError(
                f"input_image_{self.max_references + 1}",
                f"{model} takes at most {self.max_references} reference images; send fewer.",
            )
        if params.mask is not None and not self.mask:
            raise InvalidRequestError(
                "mask", f"{model} does not inpaint; leave the mask out, or send it to a model that takes one."
            )


@dataclass(frozen=True)
class GenerationDefaults:
    """What a request that leaves these out gets; a trained checkpoint brings its own."""

    steps: int
    guidance: float
    distilled: bool
    width: int = 1024
    height: int = 1024
    # Guidance for requests with reference images when the caller sets none (None: `guidance`). A checkpoint
    # trained with "empty instruction keeps the image" has an unguided pass that copies the references, so
    # guidance would push the asked change past its colour; such a checkpoint edits best at 1.0 (no CFG).
    edit_guidance: float | None = None
    capabilities: Capabilities = Capabilities(distilled=False, guidance=True, negative_prompt=True)
    model: str = "this model"

    @property
    def runs_cfg(self) -> bool:
        """Whether a request's guidance is used at all: on a checkpoint that is not distilled, through a pipeline
        that takes it; else it is dropped, as BFL's distilled klein drops it."""
        return self.capabilities.takes_guidance and not self.distilled

    def guidance_for(self, has_references: bool) -> float:
        return self.edit_guidance if has_references and self.edit_guidance is not None else self.guidance


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter to apply: its registered id, where its file is (as registered) and its scale."""

    id: str
    source: str
    scale: float = 1.0


@dataclass(frozen=True)
class ReferenceImage:
    """An input image as stored at submit (decoded, EXIF-rotated, alpha flattened, PNG), found by `name`.

    The denoiser loads it from storage by name, so a retry after a crash runs from the stored copy;
    `sha256` (of the stored PNG) is what its caches and the batch grouping key on.
    """

    sha256: str
    name: str
    width: int
    height: int


def draw_seed() -> int:
    return random.randint(0, MAX_SEED)


@dataclass(frozen=True)
class GenerationParams:
    """One request for `num_images` images of one prompt, every choice made.

    `guidance` is None on a guidance-distilled model (it has no guidance to give). Image i
    uses seed + i, so a request's images are reproducible one by one.
    """

    prompt: str
    width: int
    height: int
    steps: int
    guidance: float | None
    seed: int
    num_images: int = 1
    output_format: OutputFormat = "jpeg"
    adapters: tuple[AdapterRef, ...] = ()
    references: tuple[ReferenceImage, ...] = ()
    mask: ReferenceImage | None = None
    safety_tolerance: int = 2  # BFL's 0 (strictest) .. 6; used only when a safety checker is configured
    preview: bool = True  # small pictures of the image as it forms, with the job's progress

    @property
    def uses_cfg(self) -> bool:
        """Classifier-free guidance: the rule of Flux2KleinPipeline, so the ingress knows to send the
        empty prompt's embedding (the denoiser has no text encoder)."""
        return self.guidance is not None and self.guidance > 1.0

    @property
    def adapter_set(self) -> str:
        """The multiplexed model id of a request: its adapters, whatever their scales ('' for none)."""
        return "+".join(sorted(adapter.id for adapter in self.adapters))

    @property
    def replica_affinity(self) -> str:
        """The multiplexed model id that routes it: its adapter set, or without adapters its first reference
        ('ref:<sha256>'), so the replica holding that prepared gets it; '' for neither. Requests with other
        references never share a pass, so splitting Serve's batches by it costs no batching."""
        if self.adapters or not self.references:
            return self.adapter_set
        return "ref:" + self.references[0].sha256

    def check(self) -> None:
        """Raise InvalidRequestError for a value outside the limits (the HTTP schema checks the same)."""
        for name in ("width", "height"):
            value = getattr(self, name)
            if value < MIN_SIDE_PX or value % SIDE_MULTIPLE_PX:
                raise InvalidRequestError(
                    name,
                    f"{value} is not allowed; use a multiple of {SIDE_MULTIPLE_PX}, at least {MIN_SIDE_PX} pixels.",
                )
        if self.width * self.height > MAX_PIXELS:
            raise InvalidRequestError("width", size_error(self.width, self.height))
        if self.mask is not None and not self.references:
            raise InvalidRequestError("mask", "a mask needs the image it masks: send it as input_image.")
        if self.mask is not None and len(self.references) > 2:
            raise InvalidRequestError(
                "mask", "inpainting takes input_image and at most one more reference (input_image_2); send fewer."
            )
        if not MIN_STEPS <= self.steps <= MAX_STEPS:
            raise InvalidRequestError("steps", f"{self.steps} is outside {MIN_STEPS}..{MAX_STEPS}.")
        if self.guidance is not None and not 0.0 <= self.guidance <= MAX_GUIDANCE:
            raise InvalidRequestError("guidance", f"{self.guidance} is outside 0..{MAX_GUIDANCE:g}.")
        if not MIN_IMAGES <= self.num_images <= MAX_IMAGES:
            raise InvalidRequestError("num_images", f"{self.num_images} is outside {MIN_IMAGES}..{MAX_IMAGES}.")
        if not 0 <= self.seed <= MAX_SEED:
            raise InvalidRequestError("seed", f"{self.seed} is outside 0..{MAX_SEED}.")
        if len({adapter.id for adapter in self.adapters}) != len(self.adapters):
            raise InvalidRequestError("loras", "an adapter is listed twice; list each once with its scale.")
        for adapter in self.adapters:
            if not -MAX_LORA_SCALE <= adapter.scale <= MAX_LORA_SCALE:
                raise InvalidRequestError(
                    "loras",
                    f"scale {adapter.scale} of {adapter.id!r} is outside -{MAX_LORA_SCALE:g}..{MAX_LORA_SCALE:g}.",
                )
        if self.output_format not in OUTPUT_FORMATS:
            raise InvalidRequestError(
                "output_format", f"{self.output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}."
            )

    @classmethod
    def with_defaults(cls, defaults: GenerationDefaults, prompt: str, **given: Any) -> GenerationParams:
        """For in-process callers (bench, tests): what is not given takes the model's default or a drawn
        seed, and the result is checked (the HTTP path is checked by its schema)."""
        steps = given.pop("steps", None)
        guidance = given.pop("guidance", None)
        seed = given.pop("seed", None)
        params = cls(
            prompt=prompt,
            width=given.pop("width", defaults.width),
            height=given.pop("height", defaults.height),
            steps=defaults.steps if steps is None else steps,
            guidance=None
            if not defaults.runs_cfg
            else (defaults.guidance_for(bool(given.get("references"))) if guidance is None else guidance),
            seed=draw_seed() if seed is None else seed,
            **given,
        )
        params.check()
        defaults.capabilities.check(defaults.model, params)
        return params


def size_error(width: int, height: int) -> str:
    """What to change when width x height is over MAX_PIXELS: the largest size of the same shape that fits."""
    scale = (MAX_PIXELS / (width * height)) ** 0.5
    fit_w, fit_h = (
        max(MIN_SIDE_PX, int(side * scale) // SIDE_MULTIPLE_PX * SIDE_MULTIPLE_PX) for side in (width, height)
    )
    return (
        f"{width}x{height} is {width * height / 2**20:.2f} megapixels; at most {MAX_PIXELS / 2**20:g} megapixels "
        f"in all are allowed, e.g. {fit_w}x{fit_h} for this shape."
    )


@dataclass(frozen=True)
class DenoiseJob:
    """What a denoiser replica receives: the params and the prompt embeddings the encoder made.

    The embeddings are `deployments.encoder.PromptEmbedding`s (torch tensors), typed loosely here
    so this module stays importable without torch.
    """

    params: GenerationParams
    prompt: Any
    negative_prompt: Any = None
    job_id: str | None = None
    submitted_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class DenoiseOutcome:
    """What comes back for one job: its stored image names, timings, batch and metering."""

    images: list[str]
    timings_s: dict[str, float]
    batch: dict[str, int | str]
    gpu_seconds: float = 0.0
    replica_ready_at: float = 0.0
    cancelled: bool = False
    moderated: str | None = None  # why the safety checker withheld the images (Content Moderated)
    manifest: Manifest | None = None  # what made the images (deployments/manifest.py), recorded with the job
    cache: dict[str, str] = field(default_factory=dict)  # {"references": "hit"|"miss"} for a job with references
