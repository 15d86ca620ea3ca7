"""Encode PIL images into the bytes users download."""

from __future__ import annotations

import io

from PIL import Image

from deployments.contracts import OUTPUT_FORMATS

PIL_FORMATS = {name: name.upper() for name in OUTPUT_FORMATS}
MEDIA_TYPES = {name: f"image/{name}" for name in OUTPUT_FORMATS}


def encode_image(image: Image.Image, output_format: str, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    options = {} if output_format == "png" else {"quality": quality}
    image.save(buffer, format=PIL_FORMATS[output_format], **options)
    return buffer.getvalue()
