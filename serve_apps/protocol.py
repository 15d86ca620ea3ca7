"""HTTP schemas of the v1 API, apart from routes. Field names follow Black Forest Labs' API."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from deployments.contracts import (
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_LORA_SCALE,
    MAX_SEED,
    MAX_SIDE_PX,
    MAX_STEPS,
    MIN_IMAGES,
    MIN_SIDE_PX,
    MIN_STEPS,
    SIDE_MULTIPLE_PX,
    AdapterRef,
    GenerationDefaults,
    GenerationParams,
    OutputFormat,
    draw_seed,
)
from serve_apps.records import JobStatus

PROMPT_MAX_CHARS = 10_000
MEGAPIXEL = 1024 * 1024


def side_from_aspect(aspect_ratio: str, area_px: int = MEGAPIXEL) -> tuple[int, int]:
    """'16:9' -> the (width, height) covering about `area_px`, each a multiple of 16."""
    try:
        w_part, h_part = aspect_ratio.split(":")
        w_ratio, h_ratio = float(w_part), float(h_part)
    except ValueError:
        raise ValueError(f"aspect_ratio {aspect_ratio!r} must look like '16:9'") from None
    if not (w_ratio > 0 and h_ratio > 0) or max(w_ratio / h_ratio, h_ratio / w_ratio) > 4:
        raise ValueError(f"aspect_ratio {aspect_ratio!r} must be positive and between 1:4 and 4:1")
    height = math.sqrt(area_px * h_ratio / w_ratio)
    width = height * w_ratio / h_ratio
    return tuple(
        min(MAX_SIDE_PX, max(MIN_SIDE_PX, int(round(side / SIDE_MULTIPLE_PX)) * SIDE_MULTIPLE_PX))
        for side in (width, height)
    )


class LoraChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, description="a registered LoRA (GET /v1/loras)")
    scale: float = Field(1.0, ge=-MAX_LORA_SCALE, le=MAX_LORA_SCALE)


class GenerateRequest(BaseModel):
    """POST /v1/{model}. Unknown fields are refused so a typo does not pass silently."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=PROMPT_MAX_CHARS)
    width: int | None = Field(
        None, ge=MIN_SIDE_PX, le=MAX_SIDE_PX, description=f"multiple of {SIDE_MULTIPLE_PX}; default: the model's"
    )
    height: int | None = Field(
        None, ge=MIN_SIDE_PX, le=MAX_SIDE_PX, description=f"multiple of {SIDE_MULTIPLE_PX}; default: the model's"
    )
    aspect_ratio: str | None = Field(
        None, description="e.g. '16:9': the model's default area in that shape; instead of width/height"
    )
    steps: int | None = Field(None, ge=MIN_STEPS, le=MAX_STEPS, description="default: the model's (4 for klein)")
    guidance: float | None = Field(None, ge=0, le=MAX_GUIDANCE, description="ignored by distilled models")
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    num_images: int = Field(1, ge=MIN_IMAGES, le=MAX_IMAGES)
    output_format: OutputFormat = "jpeg"
    safety_tolerance: int = Field(2, ge=0, le=6, description="accepted for BFL compatibility")
    prompt_upsampling: bool = Field(False, description="accepted for BFL compatibility; not applied")
    loras: list[LoraChoice] = Field([], max_length=8, description="adapters to apply, each with its scale")
    add_trigger_words: bool = Field(False, description="prepend a LoRA's trigger word when the prompt lacks it")
    webhook_url: HttpUrl | None = Field(None, description="POSTed the job result when it ends, signed if webhook_secret")
    webhook_secret: str | None = Field(None, min_length=8, max_length=256)

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
        return self

    def size(self, default_width: int, default_height: int) -> tuple[int, int]:
        """(width, height): as given, from aspect_ratio over the model's default area, or the default."""
        if self.aspect_ratio is not None:
            return side_from_aspect(self.aspect_ratio, default_width * default_height)
        return self.width or default_width, self.height or default_height

    def to_params(
        self, defaults: GenerationDefaults, adapters: tuple[AdapterRef, ...] = (), prompt: str | None = None
    ) -> GenerationParams:
        """The one conversion: every default filled in, the seed drawn, guidance dropped on a distilled
        model. `adapters` are the resolved `loras`; `prompt` the prompt with trigger words, if added."""
        width, height = self.size(defaults.width, defaults.height)
        guidance = self.guidance if self.guidance is not None else defaults.guidance
        return GenerationParams(
            prompt=self.prompt if prompt is None else prompt,
            width=width,
            height=height,
            steps=self.steps if self.steps is not None else defaults.steps,
            guidance=None if defaults.distilled else guidance,
            seed=self.seed if self.seed is not None else draw_seed(),
            num_images=self.num_images,
            output_format=self.output_format,
            adapters=adapters,
        )


class SubmitResponse(BaseModel):
    id: str
    polling_url: str


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
    result: ResultPayload | None = None
    progress: float | None = Field(None, description="0..1 while Pending")
    details: dict | None = None


class Progress(BaseModel):
    step: int
    total: int


class JobResponse(BaseModel):
    id: str
    model: str
    status: JobStatus
    stage: str = Field(description="queued, encoding, denoising, done")
    progress: Progress | None = None
    queue_position: int | None = Field(None, description="jobs of this model ahead of this one, while queued")
    seed: int | None = None
    images: list[str] = []
    timings_s: dict[str, float] = {}
    batch: dict[str, int | str] = Field({}, description="images and requests in the pass, and the Ray node it ran on")
    attempts: int = 0
    error: str | None = None
    created_at: float
    updated_at: float
    request: dict
    webhook_deliveries: list[dict] | None = None
    warnings: list[str] = []
    usage: dict | None = Field(None, description="gpu_seconds (time x GPU fraction x share of the pass), cost_usd, gpu_type")


class LoraRegistration(BaseModel):
    """POST /v1/loras. Metadata not given here comes from the adapter file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    source: str = Field(min_length=1, max_length=1024, description="an absolute path under loras.allowed_roots, s3://..., or a hub repo id")
    trigger_word: str | None = Field(None, max_length=100)
    license: str | None = Field(None, max_length=100)
    tags: list[str] | None = Field(None, max_length=16, description="e.g. style, person, nsfw")


class LoraInfo(BaseModel):
    id: str
    source: str
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


class OpenAIImageRequest(BaseModel):
    """POST /v1/images/generations, as the `openai` client sends it. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=PROMPT_MAX_CHARS)
    model: str | None = Field(None, description="one of /v1/models; default: the first served")
    n: int = Field(1, ge=1, le=MAX_IMAGES)
    size: str | None = Field(None, description="'WIDTHxHEIGHT' or 'auto'")
    response_format: Literal["url", "b64_json"] = "url"
    output_format: OutputFormat = "png"

    @field_validator("size")
    @classmethod
    def _size_shape(cls, size: str | None) -> str | None:
        if size in (None, "auto"):
            return size
        try:
            width, height = (int(part) for part in size.lower().split("x"))
        except ValueError:
            raise ValueError(f"size {size!r} must look like '1024x1024'") from None
        GenerateRequest(prompt="size check", width=width, height=height)
        return size

    def to_generate_request(self) -> GenerateRequest:
        width = height = None
        if self.size not in (None, "auto"):
            width, height = (int(part) for part in self.size.lower().split("x"))
        return GenerateRequest(
            prompt=self.prompt, width=width, height=height, num_images=self.n, output_format=self.output_format
        )


class OpenAIImage(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str


class OpenAIImagesResponse(BaseModel):
    created: int
    data: list[OpenAIImage]


class ModelInfo(BaseModel):
    id: str
    weights: str
    emulated: bool
    description: str
    license: str
    commercial_use: bool
    text_encoder: str
    defaults: dict
    replicas: dict


class ErrorResponse(BaseModel):
    detail: str
