"""Reference images (editing) and masks (inpainting), handed to diffusers' klein pipelines as they take them.

References go through the pipeline's own `image=` conditioning (FLUX.2's reference tokens).
A mask runs `Flux2KleinInpaintPipeline` built from the same loaded modules, so LoRA adapters
apply there too; the pixels the mask keeps are then the source's, exactly (`keep_unmasked`). What is cached
here, by content hash, is the decoded image; their preprocessed pixels and VAE latents are kept across jobs by
deployments/reference_cache.py, which this module tells, before each call, which references the call prepares.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import numpy as np
import torch
from cachetools import LRUCache
from diffusers import Flux2KleinInpaintPipeline
from PIL import Image

from deployments.contracts import GenerationParams, ReferenceImage
from deployments.reference_cache import Preparation, PreparedReferences

ReferenceLoader = Callable[[ReferenceImage], Image.Image]
REFERENCE_CACHE_SIZE = 16  # decoded images of at most 4 MP: under 200 MB
KEEP_BELOW = 128  # mask values under this keep the source: diffusers binarizes the mask at 0.5 of 255


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
    def __init__(
        self,
        pipeline,
        load: ReferenceLoader = no_references,
        prepared: PreparedReferences | None = None,
        cache_size: int = REFERENCE_CACHE_SIZE,
    ):
        self.pipeline = pipeline
        self.load = load
        self.images: LRUCache = LRUCache(maxsize=cache_size)
        self.prepared = prepared or PreparedReferences(type(pipeline).__name__)
        self.prepared.install(pipeline)
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
            self.prepared.install(self._inpaint)
        return self._inpaint

    def inputs(self, params: GenerationParams) -> tuple[object, dict]:
        """The pipeline to call for these params and the image arguments to add to the call; the references'
        preparation is told which ones the call prepares, in the order the pipeline prepares them."""
        started = time.perf_counter()
        if not params.references:
            self.prepared.expect([])
            return self.pipeline, {}
        images = [self.image(reference) for reference in params.references]
        if params.mask is None:
            self.prepared.expect([reference.sha256 for reference in params.references], time.perf_counter() - started)
            return self.pipeline, {"image": images}
        source, mask = self._source_and_mask(params)  # the inpaint pipeline makes its output the image's size
        extra = {"image": source, "mask_image": mask, "strength": 1.0}
        if len(images) > 1:
            extra["image_reference"] = images[1]
        # the inpaint pipeline prepares its source (the first reference, at the output's size), then image_reference
        self.prepared.expect([reference.sha256 for reference in params.references[:2]], time.perf_counter() - started)
        return self.inpaint_pipeline, extra

    def preparation(self) -> Preparation | None:
        """Whether the last call's references came prepared from the cache, and what preparing them took."""
        return self.prepared.finish()

    def keep_unmasked(self, params: GenerationParams, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decoded uint8 (height, width, 3) images with the pixels the mask keeps put back from the source.

        The pipeline keeps those pixels' latents, but the VAE decoder (its mid-block attention sees the whole
        image) lets the repainted part tint them, and the VAE does not give back its input exactly; what a user
        marked as kept must come back as it was sent.
        """
        if params.mask is None:
            return images
        source, mask = self._source_and_mask(params)
        device = images[0].device
        source_pixels = torch.from_numpy(np.array(source.convert("RGB"))).to(device)
        keep = torch.from_numpy(np.asarray(mask.convert("L")) < KEEP_BELOW).to(device)[..., None]
        return [torch.where(keep, source_pixels, image) for image in images]

    def _source_and_mask(self, params: GenerationParams) -> tuple[Image.Image, Image.Image]:
        """The first reference and the mask at the output's size, as the inpaint pipeline is given them."""
        size = (params.width, params.height)
        return self.image(params.references[0]).resize(size), self.image(params.mask).resize(size)
