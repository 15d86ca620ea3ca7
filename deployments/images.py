"""Encode PIL images into the bytes users download."""

from __future__ import annotations

import io

from PIL import Image

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def encode_image(image: Image.Image, output_format: str, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    options = {} if output_format == "png" else {"quality": quality}
    image.save(buffer, format=PIL_FORMATS[output_format], **options)
    return buffer.getvalue()
