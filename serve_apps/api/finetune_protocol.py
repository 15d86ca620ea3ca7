"""HTTP schemas of fine-tuning, in BFL's finetune API shape (its names kept: file_data, finetune_comment,
trigger_word, mode, iterations, learning_rate, captioning, priority, finetune_type, lora_rank), plus
ours: `model` (which served model the finetune is for) and the `edit` mode (pairs that teach a change)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, HttpUrl

from serve_apps.api.protocol import GenerateRequest

MODES = ("general", "character", "style", "product", "edit")
TRIGGER_WORD_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,31}$"  # pydantic's (Rust) regex: $ is the very end


class FinetuneSettings(BaseModel):
    """Everything but the images: what the JSON body and the multipart form share."""

    finetune_comment: str = Field(min_length=1, max_length=200, description="a name for it, shown in its details")
    mode: Literal["general", "character", "style", "product", "edit"] = Field(
        description="how captions are written; `edit`: the images come as pairs name.png + name_target.png"
    )
    trigger_word: str = Field("TOK", pattern=TRIGGER_WORD_PATTERN, description="the word that calls the concept")
    iterations: int | None = Field(
        None,
        ge=10,
        le=2000,
        description="training steps (BFL takes 100..1000); default: the model's (300 on a real klein, 1500 offline)",
    )
    learning_rate: float | None = Field(None, gt=0, le=0.1, description="default: the mode's")
    captioning: bool = Field(True, description="write a caption (from the mode and trigger word) where none is given")
    priority: Literal["speed", "quality"] = "quality"
    finetune_type: Literal["lora", "full"] = Field(
        "lora", description="`full` is trained as a high-rank LoRA; finetune_details says so"
    )
    lora_rank: Literal[16, 32] = 32
    model: str = Field("flux-2-klein-4b", description="the served model to use it with")
    webhook_url: HttpUrl | None = None
    webhook_secret: str | None = Field(None, min_length=8, max_length=256)


class FinetuneRequest(FinetuneSettings):
    file_data: str = Field(
        description="base64 of a ZIP of 1..50 images (JPEG, PNG, WebP), each optionally with a same-stem .txt caption"
    )


class FinetuneSubmitResponse(BaseModel):
    finetune_id: str
    id: str = Field(description="the training job's id: the same as finetune_id")
    polling_url: str


class FinetuneDetails(BaseModel):
    finetune_id: str
    status: str
    finetune_comment: str
    mode: str
    trigger_word: str
    iterations: int
    learning_rate: float
    lora_rank: int
    finetune_type: str
    priority: str
    captioning: bool
    model: str
    base_variant: str = Field(description="the spec it was trained on (the undistilled base where there is one)")
    images: int
    captions_written: int = Field(description="images that got a template caption (captioning) instead of their own")
    progress: dict | None = None
    samples: list[str] = Field([], description="signed URLs of the sample images made while training")
    default_strength: float | None = Field(None, description="finetune_strength used when a request gives none")
    error: str | None = None
    details: dict = Field({}, description="what was trained: targets, rank, steps, timings")
    created_at: float


class MyFinetunes(BaseModel):
    finetunes: list[str]


class DeleteFinetune(BaseModel):
    finetune_id: str = Field(min_length=1, max_length=64)


class FinetunedGenerateRequest(GenerateRequest):
    """BFL's `/v1/{model}-finetuned`: the model's usual fields plus the finetune and its strength."""

    finetune_id: str = Field(min_length=1, max_length=64)
    finetune_strength: float | None = Field(None, ge=0, le=2, description="default: the finetune's measured best")
