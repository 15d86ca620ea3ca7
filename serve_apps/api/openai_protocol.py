"""Schemas of the OpenAI-compatible image routes, as the `openai` client sends and reads them."""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deployments.contracts import MAX_IMAGES, OutputFormat
from serve_apps.api.protocol import PROMPT_MAX_CHARS, REFERENCE_FIELDS, GenerateRequest


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int | str | None = None


class OpenAIErrorResponse(BaseModel):
    """The error shape of the OpenAI-compatible routes, as the `openai` client reads it."""

    error: OpenAIError


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


class OpenAIEditRequest(OpenAIImageRequest):
    """The form fields of POST /v1/images/edits (strings on the wire); the files come apart.

    Without `size` (or with 'auto') the output takes the first image's shape at the model's area."""

    def to_generate_request(self, images: list[bytes], mask: bytes | None = None) -> GenerateRequest:
        """The images ride the one typed road as BFL's input_image fields (base64), checked there."""
        if not images:
            raise ValueError("send at least one image file as `image` (or several as `image[]`)")
        if len(images) > len(REFERENCE_FIELDS):
            raise ValueError(f"at most {len(REFERENCE_FIELDS)} images per edit; {len(images)} were sent")
        fields = {name: base64.b64encode(data).decode() for name, data in zip(REFERENCE_FIELDS, images)}
        if mask is not None:
            fields["mask"] = base64.b64encode(mask).decode()
        request = super().to_generate_request()
        return request.model_copy(update=fields)


def openai_field(field: str) -> str:
    """BFL's field name as the `openai` client named it: input_image_3 -> image[2], mask -> mask."""
    if field in REFERENCE_FIELDS:
        return f"image[{REFERENCE_FIELDS.index(field)}]"
    return field
