"""Turn decoded pixels into the bytes users download, off the denoiser's critical path.

The VAE's output becomes uint8 on its own device (a quarter of the bytes to copy back), then PNG/WebP/JPEG
encoding runs in a thread, so the next forward pass starts while the last images are written. On a CUDA GPU
JPEG can be encoded on the device itself (nvJPEG through torchvision, when it is installed).
"""

from __future__ import annotations

import io
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from deployments.contracts import OUTPUT_FORMATS
from deployments.image_manifest import save_options, with_jpeg_comment

PIL_FORMATS = {name: name.upper() for name in OUTPUT_FORMATS}
JPEG_QUALITY = 95
PIL_DEFAULT_PNG_LEVEL = 6  # zlib's default, what PIL used before png_compress_level existed
FAST_PNG_LEVEL = 1  # about 3-5x faster than 6 on photos, files ~10-30 % larger


def encode_image(
    image: Image.Image,
    output_format: str,
    quality: int = JPEG_QUALITY,
    png_compress_level: int = FAST_PNG_LEVEL,
    manifest: str | None = None,
) -> bytes:
    """The file's bytes; `manifest` (JSON) is carried in it beside the pixels (deployments/image_manifest.py)."""
    buffer = io.BytesIO()
    options = {"compress_level": png_compress_level} if output_format == "png" else {"quality": quality}
    if manifest:
        options.update(save_options(output_format, manifest))
    image.save(buffer, format=PIL_FORMATS[output_format], **options)
    return with_manifest(buffer.getvalue(), output_format, manifest)


def with_manifest(data: bytes, output_format: str, manifest: str | None) -> bytes:
    """JPEG's manifest goes into the encoded bytes (PNG's and WebP's were written by PIL)."""
    return with_jpeg_comment(data, manifest) if manifest and output_format == "jpeg" else data


def to_uint8(pixels: torch.Tensor, denormalize: bool = True) -> torch.Tensor:
    """VAE output (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C) on the same device.

    The same arithmetic as diffusers' `VaeImageProcessor.postprocess(..., "pil")` (denormalize in the
    pixels' dtype, then float32, x255, round half to even), so the bytes match the PIL path exactly.
    """
    if denormalize:
        pixels = (pixels * 0.5 + 0.5).clamp(0, 1)
    return pixels.float().mul(255).round().to(torch.uint8).permute(0, 2, 3, 1)


def gpu_jpeg_available() -> bool:
    """torchvision is optional: without it JPEG is encoded by PIL on the CPU."""
    try:
        from torchvision.io import encode_jpeg  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def encode_jpeg_on_device(pixels_hwc: torch.Tensor, quality: int = JPEG_QUALITY) -> bytes:
    """nvJPEG through torchvision: ~0.3 ms for 1024x1024 on a GPU instead of ~10 ms in PIL."""
    from torchvision.io import encode_jpeg

    encoded = encode_jpeg(pixels_hwc.permute(2, 0, 1).contiguous(), quality=quality)
    return encoded.cpu().numpy().tobytes()


class ImageEncoder:
    """Encodes images in `threads` background threads (0: inline), each result with when it was ready.

    `submit` copies pixels to the CPU in the caller's thread (a device sync belongs on the pipeline's
    thread, not beside the next pass's kernels) and returns a future of (bytes, perf_counter when done).
    """

    def __init__(self, threads: int = 1, png_compress_level: int = FAST_PNG_LEVEL, gpu_jpeg: bool = False):
        if not 0 <= png_compress_level <= 9:
            raise ValueError(
                f"png_compress_level must be 0 (fastest, largest) .. 9 (smallest), got {png_compress_level}"
            )
        if gpu_jpeg and not gpu_jpeg_available():
            raise ValueError(
                "gpu_jpeg needs torchvision and a CUDA GPU; install torchvision (pip install torchvision) or set "
                "gpu_jpeg: false (JPEG is then encoded by PIL on the CPU)."
            )
        self.png_compress_level = png_compress_level
        self.gpu_jpeg = gpu_jpeg
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="image-encode") if threads else None

    def submit(self, pixels_hwc: torch.Tensor, output_format: str, manifest: str | None = None) -> Future:
        if self.gpu_jpeg and output_format == "jpeg" and pixels_hwc.is_cuda:
            return _done((with_manifest(encode_jpeg_on_device(pixels_hwc), "jpeg", manifest), time.perf_counter()))
        array = pixels_hwc.cpu().numpy()
        if self._pool is None:
            return _done(self._encode(array, output_format, manifest))
        return self._pool.submit(self._encode, array, output_format, manifest)

    def _encode(self, array: np.ndarray, output_format: str, manifest: str | None) -> tuple[bytes, float]:
        image = Image.fromarray(array)
        data = encode_image(image, output_format, png_compress_level=self.png_compress_level, manifest=manifest)
        return data, time.perf_counter()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future
