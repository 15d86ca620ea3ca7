"""Reruns without Ray: what may be rerun, the new job made from the old, and the comparison of their images."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from deployments.contracts import AdapterRef, GenerationParams, ReferenceImage
from lora.registry import AdapterRegistry
from serve_apps.config import AppArgs
from serve_apps.jobs.records import JobRecord, JobStatus, RerunCheck
from serve_apps.jobs.reruns import RerunRefused, check_rerunnable, compare_images, judge_rerun
from serve_apps.jobs.submission import JobSubmitter
from serve_apps.store import Database
from serve_apps.store.storage import JobStore, new_job_id

MODEL = "flux-2-klein-4b"
KEY = "0123456789ab"
REFERENCE = ReferenceImage("ab" * 32, "ab" * 32 + ".png", 64, 64)


class Registrations:
    def __init__(self, *records: dict):
        self.records = {record["id"]: record for record in records}

    def load_lora(self, lora_id: str) -> dict | None:
        return self.records.get(lora_id)

    def list_loras(self) -> list[dict]:
        return list(self.records.values())


def lora(source: str = "/loras/style.safetensors") -> dict:
    return {"id": "style", "source": source, "private": False, "fits": [MODEL], "refusals": {}, "tags": []}


def ready_job(**params) -> JobRecord:
    given = {"prompt": "p", "width": 64, "height": 64, "steps": 4, "guidance": None, "seed": 5, **params}
    return JobRecord(
        id=new_job_id(),
        model=MODEL,
        key_id=KEY,
        params=GenerationParams(**given),
        status=JobStatus.READY,
        images=["0.png"],
    )


def png(values: np.ndarray, text: str | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("flux-serve", text)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_only_a_ready_job_whose_loras_and_images_are_all_here_can_be_rerun(tmp_path):
    store = JobStore(str(tmp_path))
    registry = AdapterRegistry(Registrations(lora()), lambda: {}, sources=None)
    pending = ready_job()
    pending.status = JobStatus.PENDING
    with pytest.raises(RerunRefused, match="is Pending; only a Ready job") as refused:
        check_rerunnable(pending, registry, store)
    assert refused.value.status_code == 409

    with_lora = ready_job(adapters=(AdapterRef("style", "/loras/style.safetensors", 0.5),))
    check_rerunnable(with_lora, registry, store)
    with pytest.raises(RerunRefused, match="No LoRA 'style' is registered") as refused:
        check_rerunnable(with_lora, AdapterRegistry(Registrations(), lambda: {}, sources=None), store)
    assert refused.value.status_code == 410
    moved = AdapterRegistry(Registrations(lora("/loras/other.safetensors")), lambda: {}, sources=None)
    with pytest.raises(RerunRefused, match="now names another file") as refused:
        check_rerunnable(with_lora, moved, store)
    assert refused.value.status_code == 409

    edit = ready_job(references=(REFERENCE,))
    with pytest.raises(RerunRefused, match="input image abababababab is no longer stored") as refused:
        check_rerunnable(edit, registry, store)
    assert refused.value.status_code == 410
    store.save_reference(REFERENCE.name, png(np.zeros((64, 64, 3), np.uint8)))
    check_rerunnable(edit, registry, store)


def test_a_rerun_is_a_new_job_of_the_same_key_and_params_admitted_like_a_submit(tmp_path):
    args = AppArgs(storage_url=str(tmp_path))
    jobs = Database.open(args.database_url).jobs
    submitter = JobSubmitter(jobs, {}, args, adapters=AdapterRegistry(Registrations(), lambda: {}, sources=None))
    original = ready_job(seed=123, num_images=2)
    original.images = ["0.png", "1.png"]
    record, claim = asyncio.run(submitter.rerun(original, "http://here/", "replica-1", JobStore(str(tmp_path))))
    assert claim is not None and record.id != original.id and record.status == JobStatus.PENDING
    assert record.params == original.params and record.key_id == KEY and record.base_url == "http://here/"
    assert record.rerun == RerunCheck(of=original.id, original_images=["0.png", "1.png"])
    assert record.webhook is None and record.images == [] and record.manifest is None
    assert jobs.load(record.id).rerun.of == original.id


def test_the_verdict_is_byte_equality_else_the_largest_pixel_difference():
    check = RerunCheck(of="a", original_images=["0.png"])
    base = np.full((8, 8, 3), 100, np.uint8)
    changed = base.copy()
    changed[3, 4, 1] = 107
    identical = compare_images(check, [png(base)], [png(base)])
    assert identical.model_dump(exclude={"of", "original_images", "original_pass_requests"}) == {
        "identical": True,
        "max_pixel_difference": 0,
        "note": None,
    }
    differs = compare_images(check, [png(base), png(base)], [png(base), png(changed)])
    assert (differs.identical, differs.max_pixel_difference) == (False, 7)
    other_manifest = compare_images(check, [png(base, '{"v":1}')], [png(base, '{"v":2}')])
    assert (other_manifest.identical, other_manifest.max_pixel_difference) == (False, 0), "the manifest counts"
    assert "the pixels are equal" in other_manifest.note
    gone = compare_images(check, [None], [png(base)])
    assert gone.identical is None and "no longer stored" in gone.note
    resized = compare_images(check, [png(base)], [png(np.zeros((4, 8, 3), np.uint8))])
    assert resized.identical is False and resized.max_pixel_difference is None and "size" in resized.note


def test_the_rerun_is_judged_from_storage(tmp_path):
    store = JobStore(str(tmp_path))
    original, rerun = ready_job(), ready_job()
    image = png(np.full((8, 8, 3), 9, np.uint8))
    store.save_image(original.id, "0.png", image)
    store.save_image(rerun.id, "0.png", image)
    rerun.rerun = RerunCheck(of=original.id, original_images=["0.png"])
    verdict = judge_rerun(store, rerun)
    assert verdict.identical is True and verdict.of == original.id
