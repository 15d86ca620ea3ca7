"""HTTP schemas of the v1 API, apart from routes. Field names follow Black Forest Labs' API."""

from __future__ import annotations

import math
from dataclasses import asdict

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from deployments.contracts import (
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_LORA_SCALE,
    MAX_PIXELS,
    MAX_SEED,
    MAX_STEPS,
    MIN_IMAGES,
    MIN_SIDE_PX,
    MIN_STEPS,
    SIDE_MULTIPLE_PX,
    AdapterRef,
    GenerationDefaults,
    GenerationParams,
    OutputFormat,
    ReferenceImage,
    draw_seed,
    size_error,
)
from deployments.registry import VariantSpec
from serve_apps.jobs.records import JobStatus

PROMPT_MAX_CHARS = 10_000
MEGAPIXEL = 1024 * 1024
REFERENCE_FIELDS = ("input_image", *(f"input_image_{n}" for n in range(2, 9)))  # BFL's names; FLUX.2 [pro] takes 8
IMAGE_SOURCE = "base64 (bare or a data: URI), an http(s) URL, or an id from POST /v1/uploads"
MAX_DEADLINE_S = 3600.0


def side_from_aspect(aspect_ratio: str, area_px: int = MEGAPIXEL) -> tuple[int, int]:
    """'16:9' -> the (width, height) covering about `area_px`, each a multiple of 16."""
    try:
        w_part, h_part = aspect_ratio.split(":")
        w_ratio, h_ratio = float(w_part), float(h_part)
    except ValueError:
        raise ValueError(f"aspect_ratio {aspect_ratio!r} must look like '16:9'") from None
    if not (w_ratio > 0 and h_ratio > 0) or max(w_ratio / h_ratio, h_ratio / w_ratio) > 4:
        raise ValueError(f"aspect_ratio {aspect_ratio!r} must be positive and between 1:4 and 4:1")
    return side_from_ratio(w_ratio / h_ratio, area_px)


def side_from_ratio(width_per_height: float, area_px: int) -> tuple[int, int]:
    """The (width, height) of this shape covering about `area_px`, each a multiple of 16; shapes beyond
    4:1 are taken as 4:1 (a reference image may be any shape; outputs stay sensible)."""
    ratio = min(4.0, max(0.25, width_per_height))
    height = math.sqrt(area_px / ratio)
    width, height = (
        max(MIN_SIDE_PX, round(side / SIDE_MULTIPLE_PX) * SIDE_MULTIPLE_PX) for side in (height * ratio, height)
    )
    while width * height > MAX_PIXELS:  # rounding up may cross the pixel limit: step the longer side down
        width, height = (width - SIDE_MULTIPLE_PX, height) if width >= height else (width, height - SIDE_MULTIPLE_PX)
    return width, height


def check_deadline_s(deadline_s: float | None) -> float | None:
    if deadline_s is not None and not 0 < deadline_s <= MAX_DEADLINE_S:
        raise ValueError(
            f"deadline_s {deadline_s:g} must be above 0 and at most {MAX_DEADLINE_S:g} (seconds from submit); "
            "leave it out to wait as long as the job takes"
        )
    return deadline_s


class LoraChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, description="a registered LoRA (GET /v1/loras)")
    scale: float = Field(1.0, ge=-MAX_LORA_SCALE, le=MAX_LORA_SCALE)


class GenerateRequest(BaseModel):
    """POST /v1/{model}. Unknown fields are refused so a typo does not pass silently."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=PROMPT_MAX_CHARS)
    width: int | None = Field(
        None,
        ge=MIN_SIDE_PX,
        description=f"multiple of {SIDE_MULTIPLE_PX}, at most 4 megapixels with height; default: the model's",
    )
    height: int | None = Field(
        None,
        ge=MIN_SIDE_PX,
        description=f"multiple of {SIDE_MULTIPLE_PX}; default: the model's, or the first input image's shape",
    )
    aspect_ratio: str | None = Field(
        None, description="e.g. '16:9': the model's default area in that shape; instead of width/height"
    )
    steps: int | None = Field(None, ge=MIN_STEPS, le=MAX_STEPS, description="default: the model's (4 for klein)")
    guidance: float | None = Field(None, ge=0, le=MAX_GUIDANCE, description="ignored by distilled models")
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    num_images: int = Field(1, ge=MIN_IMAGES, le=MAX_IMAGES)
    output_format: OutputFormat = "jpeg"
    safety_tolerance: int = Field(
        2, ge=0, le=6, description="0 strictest .. 6 least strict, when a safety checker is on"
    )
    prompt_upsampling: bool = Field(False, description="accepted for BFL compatibility; not applied")
    preview: bool = Field(True, description="a small JPEG of the image as it forms, in progress (false: none)")
    loras: list[LoraChoice] = Field([], max_length=8, description="adapters to apply, each with its scale")
    add_trigger_words: bool = Field(False, description="prepend a LoRA's trigger word when the prompt lacks it")
    webhook_url: HttpUrl | None = Field(
        None, description="POSTed the job result when it ends, signed if webhook_secret"
    )
    webhook_secret: str | None = Field(None, min_length=8, max_length=256)
    input_image: str | None = Field(None, description=f"an image to edit or take after: {IMAGE_SOURCE}")
    input_image_2: str | None = Field(None, description="another reference image, the same ways")
    input_image_3: str | None = None
    input_image_4: str | None = None
    input_image_5: str | None = Field(None, description="5..8 only where inputs.max_references allows")
    input_image_6: str | None = None
    input_image_7: str | None = None
    input_image_8: str | None = None
    mask: str | None = Field(None, description="inpainting: white (or transparent) where input_image is repainted")
    deadline_s: float | None = Field(
        None, description="seconds from submit you would wait: refused at once (429) if the ETA is longer"
    )

    @field_validator("deadline_s")
    @classmethod
    def _deadline_in_range(cls, deadline_s: float | None) -> float | None:
        return check_deadline_s(deadline_s)

    @field_validator("webhook_url", mode="after")
    @classmethod
    def _as_text(cls, url):
        return None if url is None else str(url)

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_16(cls, value: int | None) -> int | None:
        if value is not None and value % SIDE_MULTIPLE_PX:
            raise ValueError(f"must be a multiple of {SIDE_MULTIPLE_PX}, e.g. {value - value % SIDE_MULTIPLE_PX}")
        return value

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("must contain some text")
        return prompt

    @model_validator(mode="after")
    def _one_way_to_give_the_size(self) -> GenerateRequest:
        if self.aspect_ratio is not None:
            if self.width is not None or self.height is not None:
                raise ValueError("give either aspect_ratio or width/height, not both")
            side_from_aspect(self.aspect_ratio)
        if self.width and self.height and self.width * self.height > MAX_PIXELS:
            raise ValueError(size_error(self.width, self.height))
        if self.mask is not None and self.input_image is None:
            raise ValueError("mask needs input_image, the image it masks")
        return self

    def image_sources(self) -> list[tuple[str, str]]:
        """(field, value) of each input image given, in order."""
        return [(name, getattr(self, name)) for name in REFERENCE_FIELDS if getattr(self, name) is not None]

    def size(
        self, default_width: int, default_height: int, first_reference: ReferenceImage | None = None
    ) -> tuple[int, int]:
        """(width, height): as given, from aspect_ratio over the model's default area, else the first
        reference's shape over that area (as BFL does), else the default."""
        area_px = default_width * default_height
        if self.aspect_ratio is not None:
            return side_from_aspect(self.aspect_ratio, area_px)
        if self.width is None and self.height is None and first_reference is not None:
            return side_from_ratio(first_reference.width / first_reference.height, area_px)
        return self.width or default_width, self.height or default_height

    def to_params(
        self,
        defaults: GenerationDefaults,
        adapters: tuple[AdapterRef, ...] = (),
        prompt: str | None = None,
        references: tuple[ReferenceImage, ...] = (),
        mask: ReferenceImage | None = None,
    ) -> GenerationParams:
        """The one conversion: every default filled in, the seed drawn, guidance dropped on a distilled
        model. `adapters` are the resolved `loras`; `prompt` the prompt with trigger words, if added;
        `references`/`mask` the input images as stored. Raises InvalidRequestError past the limits."""
        width, height = self.size(defaults.width, defaults.height, references[0] if references else None)
        guidance = self.guidance if self.guidance is not None else defaults.guidance_for(bool(references))
        params = GenerationParams(
            prompt=self.prompt if prompt is None else prompt,
            width=width,
            height=height,
            steps=self.steps if self.steps is not None else defaults.steps,
            guidance=guidance if defaults.runs_cfg else None,
            seed=self.seed if self.seed is not None else draw_seed(),
            num_images=self.num_images,
            output_format=self.output_format,
            adapters=adapters,
            references=references,
            mask=mask,
            safety_tolerance=self.safety_tolerance,
            preview=self.preview,
        )
        params.check()
        defaults.capabilities.check(defaults.model, params)
        return params


class SubmitResponse(BaseModel):
    id: str
    polling_url: str
    cost: float | None = Field(None, description="credits (1 = $0.01), estimated at submit from the GPU price table")
    input_mp: float | None = Field(None, description="megapixels of the input images, as the model sees them")
    output_mp: float | None = Field(None, description="megapixels of all output images")
    eta_s: float | None = Field(None, description="seconds until Ready, estimated from the queue and measured speed")


class ResultPayload(BaseModel):
    sample: str = Field(description="URL of the first image")
    samples: list[str] = Field(description="URLs of all images")
    seed: int
    prompt: str
    width: int
    height: int
    output_format: str


class GetResultResponse(BaseModel):
    id: str
    status: JobStatus
    result: ResultPayload | dict | None = Field(None, description="a finetune's: {finetune_id, default_strength}")
    progress: float | None = Field(None, description="0..1 while Pending")
    details: dict | None = None
    preview: dict | None = Field(
        None, description="while Pending, the latest step preview: {step, image: a data:image/jpeg;base64 URL}"
    )


class StepPreview(BaseModel):
    step: int = Field(description="the denoising step the picture was made at")
    image: str = Field(description="a data:image/jpeg;base64 URL, at most 128 px on its long side")


class Progress(BaseModel):
    step: int
    total: int
    eta_s: float | None = Field(None, description="seconds until the denoising ends, from its measured steps")


class JobResponse(BaseModel):
    id: str
    model: str
    status: JobStatus
    stage: str = Field(description="queued, encoding, denoising, done")
    progress: Progress | None = None
    queue_position: int | None = Field(None, description="jobs of this model ahead of this one, while queued")
    eta_s: float | None = Field(None, description="seconds until Ready, estimated now, while Pending")
    preview: StepPreview | None = Field(None, description="while Pending: the latest picture of the image as it forms")
    seed: int | None = None
    images: list[str] = []
    timings_s: dict[str, float] = {}
    batch: dict[str, int | str] = Field({}, description="images and requests in the pass, and the Ray node it ran on")
    cache: dict[str, str] = Field(
        {}, description="references: hit (they came prepared from the replica's cache) or miss; empty without any"
    )
    attempts: int = 0
    error: str | None = None
    created_at: float
    updated_at: float
    request: dict
    webhook_deliveries: list[dict] | None = None
    warnings: list[str] = []
    usage: dict | None = Field(
        None, description="gpu_seconds (time x GPU fraction x share of the pass), cost_usd, gpu_type"
    )
    references: list[str] = Field([], description="signed URLs of the input images, as stored")
    mask: str | None = Field(None, description="signed URL of the mask, as stored")
    manifest: dict | None = Field(None, description="what made the images, as each file carries it: docs/manifest.md")
    rerun_of: str | None = Field(None, description="a rerun's: the job it made again (POST /v1/jobs/{id}/rerun)")
    rerun: dict | None = Field(
        None, description="a rerun's verdict once Ready: identical (byte for byte), max_pixel_difference (0..255)"
    )


class LoraRegistration(BaseModel):
    """POST /v1/loras. Metadata not given here comes from the adapter file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    source: str = Field(
        min_length=1,
        max_length=1024,
        description="an absolute path under loras.allowed_roots, s3://..., or a hub repo id",
    )
    trigger_word: str | None = Field(None, max_length=100)
    license: str | None = Field(None, max_length=100)
    tags: list[str] | None = Field(
        None,
        max_length=16,
        description="e.g. style, person, nsfw; default: the file's. The file's own person and nsfw tags stay either way",
    )


class LoraInfo(BaseModel):
    id: str
    source: str | None = Field(
        None, description="where the file is: a hub repo id for every key; a path or s3:// URL for admin keys only"
    )
    yours: bool = Field(False, description="registered by this key: only it (or an admin key) may change it")
    base_model: str
    trigger_word: str | None
    license: str | None
    tags: list[str]
    rank: int | None
    fits: list[str]
    refusals: dict[str, str]
    registered_at: float


class JobListResponse(BaseModel):
    jobs: list[JobResponse]
    next_cursor: str | None = Field(None, description="pass as cursor= for the next page; null at the end")


class ModelInfo(BaseModel):
    """A model of `GET /v1/models`: one served here, or one whose spec this server knows (`served: false`)."""

    id: str
    served: bool = Field(description="false: known from its spec, not deployed here; add it under models: in config")
    variant: str = Field(description="the spec this model runs (the id itself unless the operator named it)")
    source: str = Field(description="where the variant's real weights come from")
    pipeline: str = Field(description="the diffusers pipeline that runs it")
    capabilities: dict
    weights: str | None = Field(
        None, description="emulated[:size], a hub repo id, or (for admin keys, the path) local or remote checkpoint"
    )
    emulated: bool | None = None
    description: str
    license: str
    commercial_use: bool
    text_encoder: str
    defaults: dict
    replicas: dict | None = None
    deterministic: bool | None = Field(
        None, description="true: a rerun makes the same bytes whoever shared its call (served models only)"
    )
    cost: dict = Field(description="GPU-seconds per megapixel-step the quote uses, and where the figure comes from")

    @classmethod
    def from_spec(cls, spec: VariantSpec, served: bool, **deployed) -> ModelInfo:
        """What the spec says; `deployed` adds what the running deployment knows (weights, defaults, replicas)."""
        facts = {
            "id": spec.name,
            "served": served,
            "variant": spec.base_name,
            "source": spec.source,
            "pipeline": spec.pipeline_class,
            "capabilities": asdict(spec.capabilities),
            "license": spec.license,
            "commercial_use": spec.commercial_use,
            "text_encoder": spec.text_encoder.hf_repo,
            "cost": asdict(spec.cost),
            "description": f"not served here: add {spec.name} under models: in serve_config.yaml to serve it",
            "defaults": {"steps": spec.default_steps, "guidance": spec.default_guidance, "distilled": spec.distilled},
        }
        return cls(**{**facts, **deployed})


class ErrorResponse(BaseModel):
    detail: str
