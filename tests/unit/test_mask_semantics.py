"""What a mask does to the image, not only its size: black keeps the source, white repaints, half keeps one half.

Masks arrive as the service receives them (8-bit greyscale, 16-bit greyscale PNG, and RGBA whose transparent
pixels are repainted, OpenAI's convention) and go through the service's own decoding (serve_apps/jobs/inputs.py)
and storage format (PNG bytes the denoiser loads), then the tiny emulated model repaints. Differences are the mean
absolute difference per pixel and channel (0..255) between the output and the source, over a region.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deployments.contracts import DenoiseJob, GenerationParams, ReferenceImage
from serve_apps.config import InputArgs
from serve_apps.jobs.inputs import DecodedImage, decode_image, decode_mask

SIDE_PX = 64  # 4x4 image tokens on the tiny model: each half is two token columns
HALF = SIDE_PX // 2
MAX_PIXELS = InputArgs().max_pixels
KEPT_AT_MOST = 0.5  # the kept pixels are the source's: exactly, PNG being lossless
REPAINTED_AT_LEAST = 20.0  # the tiny model's repaint is ~63 from the source; a flat grey is ~57 from it

# Each mask format as (value that keeps, value that repaints) per pixel, in the encoding a client sends.
L8 = ("L", 0, 255)
# 16-bit grey: 0x0400 is near black; clipped to 8 bits (instead of scaled) it would turn white and repaint
I16 = ("I;16", 0x0400, 0xFFFF)
# RGBA: transparent is repainted whatever its colour; an opaque pixel is kept even when white
ALPHA = ("RGBA", (255, 255, 255, 255), (0, 0, 0, 0))
ALPHA_KEEP_ALL = (0, 0, 0, 255)  # fully opaque has no transparency: the colour decides, and black keeps


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mask_png(mode: str, left, right) -> bytes:
    """A SIDE_PX square mask with `left` in its left half and `right` in its right half."""
    if mode == "I;16":
        values = np.full((SIDE_PX, SIDE_PX), right, dtype=np.uint16)
        values[:, :HALF] = left
        image = Image.fromarray(values)
        assert image.mode == "I;16"
        return png(image)
    image = Image.new(mode, (SIDE_PX, SIDE_PX), right)
    image.paste(left, (0, 0, HALF, SIDE_PX))
    return png(image)


def source_pixels() -> np.ndarray:
    """A colourful source: gradients in three directions."""
    y, x = np.mgrid[0:SIDE_PX, 0:SIDE_PX]
    return np.stack([x * 4, y * 4, 255 - (x + y) * 2], -1).astype(np.uint8)


@pytest.fixture
def inpaint(denoiser_factory, prompt):
    """Runs a mask, sent as `mask_bytes`, over the source; returns the output's pixels."""
    stored: dict[str, bytes] = {}

    def store(decoded: DecodedImage) -> ReferenceImage:
        stored[decoded.name] = decoded.png
        return ReferenceImage(decoded.sha256, decoded.name, decoded.width, decoded.height)

    denoiser = denoiser_factory(reference_images=lambda reference: Image.open(io.BytesIO(stored[reference.name])))
    source = store(decode_image(png(Image.fromarray(source_pixels())), "input_image", MAX_PIXELS))

    def run(mask_bytes: bytes) -> np.ndarray:
        mask = store(decode_mask(mask_bytes, "mask", MAX_PIXELS))
        params = GenerationParams.with_defaults(
            denoiser.defaults, "make it blue", width=SIDE_PX, height=SIDE_PX, seed=3, output_format="png",
            references=(source,), mask=mask,
        )  # fmt: skip
        [result] = denoiser.generate([DenoiseJob(params, prompt)])
        return np.asarray(Image.open(io.BytesIO(result.images[0])).convert("RGB"))

    return run


def difference(output: np.ndarray, region: slice = slice(None)) -> float:
    """Mean absolute difference from the source over columns `region`."""
    return float(np.abs(output[:, region].astype(int) - source_pixels()[:, region].astype(int)).mean())


@pytest.mark.parametrize("mask_format", [L8, I16, ALPHA], ids=["8-bit", "16-bit", "alpha"])
def test_black_keeps_white_repaints_half_keeps_half(inpaint, mask_format):
    mode, keep, repaint = mask_format
    keep_all = mask_png(mode, keep, keep) if mode != "RGBA" else mask_png(mode, ALPHA_KEEP_ALL, ALPHA_KEEP_ALL)
    kept = difference(inpaint(keep_all))
    repainted = difference(inpaint(mask_png(mode, repaint, repaint)))
    half = inpaint(mask_png(mode, repaint, keep))
    left_repainted, right_kept = difference(half, slice(None, HALF)), difference(half, slice(HALF, None))
    print(
        f"\n{mode}: kept {kept:.2f}, repainted {repainted:.2f}, half: left {left_repainted:.2f} right {right_kept:.2f}"
    )
    assert kept <= KEPT_AT_MOST and right_kept <= KEPT_AT_MOST
    assert repainted >= REPAINTED_AT_LEAST and left_repainted >= REPAINTED_AT_LEAST


def test_the_baselines_the_thresholds_stand_on(denoiser):
    """What 'repainted' is measured against: a flat mid-grey is this far from the source, and so is the tiny model's
    VAE round trip (what a kept region would be without the source's pixels put back)."""
    grey = np.full_like(source_pixels(), 128)
    assert difference(grey) > REPAINTED_AT_LEAST
    assert difference(vae_round_trip(denoiser)) > REPAINTED_AT_LEAST, "without the paste-back, kept is not kept"


def vae_round_trip(denoiser) -> np.ndarray:
    import torch

    from deployments.images import to_uint8

    pipeline = denoiser.pipeline
    with torch.inference_mode():
        pixels = pipeline.image_processor.preprocess(Image.fromarray(source_pixels()), SIDE_PX, SIDE_PX)
        latents = pipeline.vae.encode(pixels.to(pipeline.vae.dtype)).latent_dist.mode()
        decoded = pipeline.vae.decode(latents, return_dict=False)[0]
    return to_uint8(decoded)[0].numpy()
