"""A request's input images turned into stored references, once, at submit; and uploads.

Each image is fetched or decoded (serve_apps/jobs/inputs.py), checked by the safety checker if one
is configured, and stored content-addressed (refs/<sha256>.png) before the job exists, so the
denoiser (and a retry after a crash) reads exactly what was checked.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass

from deployments.contracts import ReferenceImage
from serve_apps.api.protocol import GenerateRequest
from serve_apps.config import AppArgs
from serve_apps.jobs.decoded_inputs import DecodedInputs, input_key
from serve_apps.jobs.decoding import InputTurns, decode_in_pool
from serve_apps.jobs.inputs import (
    DecodedImage,
    ImageSource,
    InputRejected,
    decode_image,
    decode_mask,
    fetch_image,
    parse_source,
    too_big,
)
from serve_apps.jobs.retention import DAY_S
from serve_apps.security import safety
from serve_apps.security.limits import OverLimit
from serve_apps.store.storage import JobStore, StoredUploads


@dataclass(frozen=True)
class ResolvedInputs:
    """The stored references and mask of one request, and why its inputs are refused (Request Moderated)."""

    references: tuple[ReferenceImage, ...] = ()
    mask: ReferenceImage | None = None
    refusal: str | None = None


@dataclass(frozen=True)
class Upload:
    id: str
    width: int
    height: int
    sha256: str


def as_reference(decoded: DecodedImage) -> ReferenceImage:
    return ReferenceImage(sha256=decoded.sha256, name=decoded.name, width=decoded.width, height=decoded.height)


class InputResolver:
    """Raises InputRejected (naming the field) for any input it will not use; nothing refused reaches a model."""

    def __init__(self, store: JobStore, args: AppArgs, checker: safety.ImageSafetyChecker | None = None):
        self.store = store
        self.limits = args.inputs
        self.upload_limits = args.limits
        self.retention_days = args.jobs.retention_days
        self.turns = InputTurns(args.inputs.concurrent_images_per_key, args.inputs.concurrent_images_per_replica)
        self.decoded = DecodedInputs(args.inputs.decoded_cache_bytes)
        self.allowed_private_hosts = args.network.allowed_private_hosts
        self.checker = checker

    @classmethod
    def from_args(cls, args: AppArgs) -> InputResolver:
        return cls(JobStore(args.storage_url, args.storage_options), args, safety.load_checker(args.safety.checker))

    async def resolve(self, request: GenerateRequest, key_id: str) -> ResolvedInputs:
        sources = request.image_sources()
        if not sources:
            return ResolvedInputs()
        if len(sources) > self.limits.max_references:
            field = sources[self.limits.max_references][0]
            raise InputRejected(
                field, f"at most {self.limits.max_references} input images per request here (inputs.max_references)."
            )
        decoded = await asyncio.gather(*(self._decoded(field, value, key_id) for field, value in sources))
        mask = await self._decoded("mask", request.mask, key_id, as_mask=True) if request.mask else None
        images = [image.image for image in decoded]
        refusal = await asyncio.to_thread(safety.refusal, self.checker, images, request.safety_tolerance, "input image")
        if refusal is not None:  # a flagged input is neither kept nor shown back: the job records only the refusal
            return ResolvedInputs(refusal=refusal)
        for image in [*decoded, *([mask] if mask else [])]:
            await asyncio.to_thread(self.store.save_reference, image.name, image.png)
        return ResolvedInputs(tuple(as_reference(d) for d in decoded), mask and as_reference(mask), refusal)

    async def _decoded(self, field: str, value: str, key_id: str, as_mask: bool = False) -> DecodedImage:
        source = parse_source(field, value, self.limits.max_bytes)
        async with self.turns.turn(key_id, self.limits.timeout_s):  # the key's fair share of fetch and decode
            data = await self._fetched(field, source, key_id)
            key = await decode_in_pool(input_key, data, as_mask, self.limits.max_pixels)
            known = self.decoded.get(key)
            if known is not None:  # the same bytes as an earlier request's: decoded then
                return known
            decode = decode_mask if as_mask else decode_image
            decoded = await decode_in_pool(decode, data, field, self.limits.max_pixels)
            self.decoded.put(key, decoded)
            return decoded

    async def _fetched(self, field: str, source: ImageSource, key_id: str) -> bytes:
        """The image's bytes, at most inputs.max_bytes, wherever `source` says they are."""
        if source.kind == "url":
            data = await fetch_image(source.url, field, self.limits, self.allowed_private_hosts)
        elif source.kind == "upload":
            data = await asyncio.to_thread(self.store.load_upload, key_id, source.upload_id)
            if data is None:
                raise InputRejected(
                    field, f"no upload {source.upload_id!r} for this key; POST the file to /v1/uploads."
                )
        else:
            data = source.data
        if len(data) > self.limits.max_bytes:
            raise InputRejected(field, too_big(self.limits.max_bytes))
        return data

    async def upload(self, key_id: str, data: bytes, limiter=None, field: str = "file") -> Upload:
        """Decode and store an uploaded image (as any input is), private to `key_id`; its id works as input_image.

        Admitted first by the key's uploads a minute, counted in `limiter` (the KeyLimiter handle every
        replica shares; None: no rate), then by what the key keeps stored (count and bytes) as storage
        lists it, checked and written while the key holds one of its turns to decode: uploads of one key
        that pass the check together are at most inputs.concurrent_images_per_key per ingress replica.
        Raises OverLimit (429) over a limit, InputRejected for an image it will not take."""
        if len(data) > self.limits.max_bytes:
            raise InputRejected(field, too_big(self.limits.max_bytes))
        if limiter is not None:
            over = await limiter.admit_upload.remote(key_id, self.upload_limits.uploads_per_minute_per_key)
            if over:
                raise OverLimit(over["reason"], over["retry_after_s"], over["status_code"])
        async with self.turns.turn(key_id, self.limits.timeout_s):
            stored = await asyncio.to_thread(self.store.stored_uploads, key_id)
            self._check_quota(stored, 0, field)  # already full: refused before decoding
            decoded = await decode_in_pool(decode_image, data, field, self.limits.max_pixels)
            self._check_quota(stored, len(decoded.png), field)
            upload_id = f"upload_{uuid.uuid4().hex}"
            await asyncio.to_thread(self.store.save_upload, key_id, upload_id, decoded.png)
        return Upload(upload_id, decoded.width, decoded.height, decoded.sha256)

    def _check_quota(self, stored: StoredUploads, adding_bytes: int, field: str) -> None:
        """OverLimit (429, Retry-After: until the key's oldest upload is deleted) when storing `adding_bytes`
        more would pass limits.uploads_per_key or limits.upload_bytes_per_key; InputRejected for an image
        that alone is over the bytes a key may keep."""
        most_bytes = self.upload_limits.upload_bytes_per_key
        if adding_bytes > most_bytes:
            raise InputRejected(
                field,
                f"stored as PNG the image takes {megabytes(adding_bytes)}, over the {megabytes(most_bytes)} a key "
                "may keep in uploads (limits.upload_bytes_per_key); send a smaller image.",
            )
        if stored.count >= self.upload_limits.uploads_per_key:
            what = f"this key already keeps {stored.count} uploads, the most allowed (limits.uploads_per_key)"
        elif stored.total_bytes + adding_bytes > most_bytes:
            what = (
                f"this key's uploads already take {megabytes(stored.total_bytes)} of the {megabytes(most_bytes)} "
                f"allowed (limits.upload_bytes_per_key), and this one needs {megabytes(adding_bytes)}"
            )
        else:
            return
        expires_in_s = stored.oldest_written_s + self.retention_days * DAY_S - time.time()
        raise OverLimit(
            f"{what}; uploads are deleted {self.retention_days:g} days after they are made (jobs.retention_days), "
            f"this key's oldest in {max(0.0, expires_in_s) / DAY_S:.1f} days; until then send the upload ids you "
            "have (an id works in any number of requests) or the image itself as base64 or a URL",
            max(1, math.ceil(expires_in_s)),
        )


def megabytes(size_bytes: int) -> str:
    return f"{size_bytes / 2**20:.1f} MB"
