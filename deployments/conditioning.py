"""Reference images (editing) and masks (inpainting), handed to diffusers' klein pipelines as they take them.

References go through the pipeline's own `image=` conditioning (FLUX.2's reference tokens).
A mask runs `Flux2KleinInpaintPipeline` built from the same loaded modules, so LoRA adapters
apply there too. The klein pipeline VAE-encodes `image=` on each call and takes no
precomputed latents there, so what is cached here, by content hash, is the decoded image: a
forward pass encodes its references once for all of its images.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from cachetools import LRUCache
from diffusers import Flux2KleinInpaintPipeline
from PIL import Image

from deployments.contracts import GenerationParams, ReferenceImage

ReferenceLoader = Callable[[ReferenceImage], Image.Image]
REFERENCE_CACHE_SIZE = 16  # decoded images of at most 4 MP: under 200 MB


def stored_references(read: Callable[[str], bytes | None]) -> ReferenceLoader:
    """A loader over storage's `load_reference(name)`; a reference gone from storage fails the job, loudly."""

    def load(reference: ReferenceImage) -> Image.Image:
        data = read(reference.name)
        if data is None:
            raise FileNotFoundError(f"reference image {reference.name} is not in storage")
        return Image.open(io.BytesIO(data))

    return load


def no_references(reference: ReferenceImage) -> Image.Image:
    raise FileNotFoundError(f"this denoiser was built without a reference loader; cannot load {reference.name}")


def group_key(params: GenerationParams) -> tuple:
    """What requests must share to run in one pass: the pipeline gives every image of a call the same
    references, so the same reference contents (hence count and sizes) and the same mask."""
    return tuple(reference.sha256 for reference in params.references), params.mask and params.mask.sha256


class Conditioning:
    def __init__(self, pipeline, load: ReferenceLoader = no_references, cache_size: int = REFERENCE_CACHE_SIZE):
        self.pipeline = pipeline
        self.load = load
        self.images: LRUCache = LRUCache(maxsize=cache_size)
        self._inpaint = None

    def image(self, reference: ReferenceImage) -> Image.Image:
        if reference.sha256 not in self.images:
            image = self.load(reference)
            image.load()
            self.images[reference.sha256] = image
        return self.images[reference.sha256]

    @property
    def inpaint_pipeline(self) -> Flux2KleinInpaintPipeline:
        """Built on first use from the loaded modules (no weights are loaded twice)."""
        if self._inpaint is None:
            self._inpaint = Flux2KleinInpaintPipeline.from_pipe(self.pipeline)
        return self._inpaint

    def inputs(self, params: GenerationParams) -> tuple[object, dict]:
        """The pipeline to call for these params and the image arguments to add to the call."""
        if not params.references:
            return self.pipeline, {}
        images = [self.image(reference) for reference in params.references]
        if params.mask is None:
            return self.pipeline, {"image": images}
        size = (params.width, params.height)  # the inpaint pipeline makes its output the image's size
        extra = {"image": images[0].resize(size), "mask_image": self.image(params.mask).resize(size), "strength": 1.0}
        if len(images) > 1:
            extra["image_reference"] = images[1]
        return self.inpaint_pipeline, extra
