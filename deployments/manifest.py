"""The manifest of an image: everything that decided its pixels, so it can be made again and checked.

The ingress decides the request once (`GenerationParams`: prompt, seed, size, steps, guidance, adapters, input
images); the denoiser replica alone knows what ran it (the served model, its weights and their digest, the LoRA
files' digests, speed-ups, library versions, device, dtype). So the replica writes the manifest: into each image
file (`deployments.image_manifest`) and, for the job, into the outcome the ingress records. Nothing in it varies
between two runs of one request (no time, no host), so a rerun's bytes can equal the original's.
The fields are documented in docs/manifest.md.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from deployments.contracts import GenerationParams
from deployments.digests import folder_sha256
from deployments.weights import REAL_SIZE, ResolvedWeights, is_emulated

logger = logging.getLogger("flux_serve.manifest")

MANIFEST_KEY = "flux-serve"  # the PNG text chunk's keyword; JPEG and WebP carry the JSON alone
MANIFEST_FORMAT = 1
VERSIONED_PACKAGES = ("torch", "diffusers", "flux-serve")


@dataclass(frozen=True)
class LoraUsed:
    id: str
    sha256: str
    scale: float


@dataclass(frozen=True)
class Manifest:
    """One job's manifest (`image` None: the job record's), or one image's (`image` its index, `seed` its own)."""

    model: str
    variant: str
    weights: str
    weights_sha256: str | None
    loras: tuple[LoraUsed, ...]
    prompt: str
    negative_prompt: str | None  # "" when CFG runs (its unconditional pass is the empty prompt), else None
    seed: int
    image: int | None
    num_images: int
    width: int
    height: int
    steps: int
    guidance: float | None
    references: tuple[str, ...]  # sha256 of each input image as stored (decoded, rotated, flattened, PNG)
    mask: str | None
    output_format: str
    speedups: tuple[str, ...]
    device: str
    dtype: str
    versions: dict[str, str] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT

    def for_image(self, index: int) -> Manifest:
        """Image `index` of the job: its seed is the job's + index, as the denoiser draws it."""
        return replace(self, seed=self.seed + index, image=index)

    def to_json(self) -> str:
        """Compact, keys sorted, ASCII only: it fits a PNG tEXt chunk, a JPEG comment and an EXIF ASCII field."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def shown_weights(setting: str) -> str:
    """The weights as a manifest names them: emulated sizes and hub ids as set, a local folder by its name only
    (a manifest travels inside images: no paths of the server)."""
    if is_emulated(setting) or not Path(setting).expanduser().exists():
        return setting
    return f"local:{Path(setting).expanduser().resolve().name}"


def weights_sha256(weights: ResolvedWeights) -> str | None:
    """The checkpoint folder's digest (`digests.folder_sha256`); a hub id's from its downloaded copy; None for
    weights built in memory (emulated:real has no files)."""
    if weights.source == REAL_SIZE:
        return None
    folder = Path(weights.source).expanduser()
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(weights.source, local_files_only=True))
    return folder_sha256(folder)


def _digest_or_none(weights: ResolvedWeights) -> str | None:
    try:
        return weights_sha256(weights)
    except Exception as error:  # e.g. a hub id whose files are not in the local cache: the manifest says null
        logger.warning("no digest of the weights %s: %s", weights.source, error)
        return None


def library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in VERSIONED_PACKAGES}


class Provenance:
    """What a denoiser replica knows of its images' making, once, at load. The weights' digest is hashed in a
    thread (a real checkpoint is gigabytes); the first manifest waits for it."""

    def __init__(self, model: str, variant: str, weights_setting: str, weights: ResolvedWeights, device, dtype):
        self.model, self.variant = model, variant
        self.weights = shown_weights(weights_setting)
        self.device = device
        self.dtype = dtype
        self.versions = library_versions()
        pool = ThreadPoolExecutor(1, thread_name_prefix="weights-digest")
        self._weights_sha256: Future = pool.submit(_digest_or_none, weights)
        pool.shutdown(wait=False)  # the thread ends with its one task

    @property
    def weights_sha256(self) -> str | None:
        return self._weights_sha256.result()

    def manifest(
        self, params: GenerationParams, lora_sha256: Mapping[str, str], speedups: tuple[str, ...] = ()
    ) -> Manifest:
        """The job's manifest; `lora_sha256` maps each adapter's source to its file's digest."""
        return Manifest(
            model=self.model,
            variant=self.variant,
            weights=self.weights,
            weights_sha256=self.weights_sha256,
            loras=tuple(LoraUsed(a.id, lora_sha256[a.source], a.scale) for a in params.adapters),
            prompt=params.prompt,
            negative_prompt="" if params.uses_cfg else None,
            seed=params.seed,
            image=None,
            num_images=params.num_images,
            width=params.width,
            height=params.height,
            steps=params.steps,
            guidance=params.guidance,
            references=tuple(reference.sha256 for reference in params.references),
            mask=params.mask.sha256 if params.mask else None,
            output_format=params.output_format,
            speedups=tuple(speedups),
            device=self.device,
            dtype=self.dtype,
            versions=self.versions,
        )
