"""Reruns: a Ready job made again from its recorded params, and its images compared with the original's.

A rerun is a new job of the same key with the same `GenerationParams` (seed, LoRA sources, stored input images), so it
goes through the usual admission and limits and runs like any job. Before it is made, what the original used must still
be there (its LoRAs registered, with the same file; its input images in storage); once it is Ready, its images are
compared with the original's, file by file: `identical` when every file's bytes are equal (the manifests inside them
included: they hold nothing that varies between runs), else the largest absolute pixel difference.
"""

from __future__ import annotations

import io
from http import HTTPStatus

import numpy as np
from PIL import Image

from lora.registry import AdapterError, AdapterRegistry
from serve_apps.jobs.records import JobRecord, JobStatus, RerunCheck
from serve_apps.store.storage import JobStore


class RerunRefused(Exception):
    """Why a job cannot be rerun: 409 for its state, 410 for what it used that is gone."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def check_rerunnable(original: JobRecord, adapters: AdapterRegistry | None, store: JobStore) -> None:
    """Raise RerunRefused unless the job is a Ready generation whose LoRAs and input images are all still here."""
    if not isinstance(original, JobRecord):
        raise RerunRefused(HTTPStatus.CONFLICT, f"Job {original.id} is a {original.kind} job; only generations rerun.")
    if original.status != JobStatus.READY:
        raise RerunRefused(
            HTTPStatus.CONFLICT,
            f"Job {original.id} is {original.status.value}; only a Ready job can be rerun: wait until it is Ready.",
        )
    params = original.params
    for adapter in params.adapters:
        try:
            (record,) = adapters.resolve(original.model, [(adapter.id, adapter.scale)], original.key_id)
        except AdapterError as error:
            raise RerunRefused(HTTPStatus.GONE, f"Job {original.id} used LoRA {adapter.id!r}: {error}") from None
        if record["source"] != adapter.source:
            raise RerunRefused(
                HTTPStatus.CONFLICT,
                f"LoRA {adapter.id!r} now names another file than job {original.id} used, so a rerun would not make "
                "the same images; submit the request again instead.",
            )
    for image in [*params.references, params.mask]:
        if image is not None and store.load_reference(image.name) is None:
            raise RerunRefused(
                HTTPStatus.GONE,
                f"Job {original.id}'s input image {image.sha256[:12]} is no longer stored (retention removes input "
                "images no job names); submit the request again with the image.",
            )


def rerun_record(original: JobRecord, job_id: str, owner: str, base_url: str) -> JobRecord:
    """The new job: the original's model, key and params, without its result, webhook or deadline."""
    return JobRecord(
        id=job_id,
        model=original.model,
        key_id=original.key_id,
        base_url=base_url,
        params=original.params,
        owner=owner,
        warnings=original.warnings,
        rerun=RerunCheck(
            of=original.id,
            original_images=original.images,
            original_pass_requests=int(original.batch.get("requests") or 1),
        ),
    )


def compare_images(
    check: RerunCheck, original: list[bytes | None], rerun: list[bytes | None], rerun_pass_requests: int = 1
) -> RerunCheck:
    """`check` with its verdict: the rerun's files against the original's, image for image; where pixels differ,
    the note says why they may and what makes them equal (deployments/determinism.py)."""

    def verdict(**fields) -> RerunCheck:
        return check.model_copy(update=fields)

    if None in original:
        return verdict(note="the original's images are no longer stored: nothing to compare with")
    if None in rerun:
        return verdict(note="the rerun's images are not in storage: nothing to compare")
    if len(original) != len(rerun):
        return verdict(identical=False, note=f"{len(rerun)} images against the original's {len(original)}")
    if original == rerun:
        return verdict(identical=True, max_pixel_difference=0)
    differences = [pixel_difference(before, after) for before, after in zip(original, rerun)]
    if None in differences:
        return verdict(identical=False, note="an image's size or colour mode differs from the original's")
    largest = max(differences)
    if not largest:
        note = "the pixels are equal; the files differ (their manifests: a version, a digest)"
    elif max(check.original_pass_requests, rerun_pass_requests) > 1:
        note = (
            "the original or the rerun shared its forward pass with other jobs, and a batch's kernels round "
            "differently; a model served with deterministic: true runs each job in passes of its own"
        )
    else:
        note = (
            "the kernels rounded differently (a GPU may pick its algorithms per run); a model served with "
            "deterministic: true asks for deterministic ones"
        )
    return verdict(identical=False, max_pixel_difference=largest, note=note)


def pixel_difference(before: bytes, after: bytes) -> int | None:
    """The largest absolute difference of one channel of one pixel, 0..255; None if the images' shapes differ."""
    with Image.open(io.BytesIO(before)) as first, Image.open(io.BytesIO(after)) as second:
        if first.size != second.size or first.mode != second.mode:
            return None
        a, b = np.asarray(first, dtype=np.int16), np.asarray(second, dtype=np.int16)
    return int(np.abs(a - b).max()) if a.size else 0


def judge_rerun(store: JobStore, record: JobRecord) -> RerunCheck:
    """Both jobs' images loaded from storage and compared (blocking: run it in a thread)."""
    check = record.rerun
    original = [store.load_image(check.of, name) for name in check.original_images]
    rerun = [store.load_image(record.id, name) for name in record.images]
    return compare_images(check, original, rerun, int(record.batch.get("requests") or 1))
