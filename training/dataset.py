"""Training data for LoRA: a folder of images with same-named .txt captions, or a Parquet
file with `image` (encoded bytes) and `caption` columns."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


class DatasetError(ValueError):
    """Training data that cannot be used as given."""


def load_examples(path: Path) -> list[tuple[Image.Image, str]]:
    if path.is_dir():
        examples = []
        for image_path in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            caption_path = image_path.with_suffix(".txt")
            if not caption_path.exists():
                raise DatasetError(f"{image_path.name} has no caption: add {caption_path.name} next to it.")
            examples.append((Image.open(image_path).convert("RGB"), caption_path.read_text().strip()))
    elif path.suffix == ".parquet":
        table = pq.read_table(path)
        missing = {"image", "caption"} - set(table.column_names)
        if missing:
            raise DatasetError(f"{path} lacks column(s) {sorted(missing)}; it needs `image` (bytes) and `caption`.")
        examples = [
            (Image.open(io.BytesIO(image)).convert("RGB"), caption)
            for image, caption in zip(table.column("image").to_pylist(), table.column("caption").to_pylist())
        ]
    else:
        raise DatasetError(f"{path} is neither a folder of images with .txt captions nor a .parquet file.")
    if not examples:
        raise DatasetError(f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return examples


def to_pixels(images: list[Image.Image], resolution: int) -> torch.Tensor:
    """Center-cropped squares of `resolution` px, in [-1, 1], (B, 3, H, W)."""
    squares = [ImageOps.fit(image, (resolution, resolution), Image.BICUBIC) for image in images]
    array = np.stack([np.asarray(image, dtype=np.float32) for image in squares]) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
