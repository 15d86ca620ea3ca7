"""The image safety checker on the whole job path, in-process with the plain workers (no Ray): a flagged output ends
`Content Moderated` with no image stored and no URL; a flagged input image ends the job `Request Moderated` at submit,
before any model work. The checker is plugged in as an operator does, `safety.checker: "module:Class"`."""

from __future__ import annotations

import asyncio
import base64
import io
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from deployments.registry import get_variant
from deployments.weights import describe_weights
from serve_apps.api.protocol import GenerateRequest
from serve_apps.api.views import JobViews
from serve_apps.config import AppArgs
from serve_apps.jobs.records import JobStatus
from serve_apps.jobs.service import JobService
from serve_apps.live import InProcessChannel
from serve_apps.security.signing import UrlSigner
from serve_apps.store import Database
from serve_apps.store.storage import JobStore
from serve_apps.workers import DenoiserServer

MODEL = "flux-2-klein-4b"
KEY_ID = "0123456789ab"


class FlagsEverything:
    """A stand-in classifier: every image is certainly unsafe."""

    def unsafe_score(self, image: Image.Image) -> float:
        return 1.0


class FlagsNothing:
    def unsafe_score(self, image: Image.Image) -> float:
        return 0.0


class Method:
    def __init__(self, function):
        self.function = function

    def remote(self, *args):
        return self.function(*args)


class Handle:
    """A deployment handle whose methods run in this process."""

    def __init__(self, **methods):
        for name, function in methods.items():
            setattr(self, name, Method(function))

    def options(self, **_options):
        return self


def make_service(tmp_path: Path, checker: type, encoder) -> tuple[JobService, list[str]]:
    """A JobService over the tiny workers with `checker` configured; the list records every model call."""
    args = AppArgs(
        storage_url=str(tmp_path),
        models={MODEL: {"weights": "emulated:tiny", "device": "cpu", "num_gpus": 0}},
        safety={"checker": f"{__name__}:{checker.__name__}"},
    )
    channel = InProcessChannel()
    denoiser = DenoiserServer(args, MODEL, channel=channel)
    model_calls: list[str] = []

    async def encode(prompt: str):
        model_calls.append("encode")
        return encoder.encode([prompt])[0]

    async def generate(job, prompt, negative):
        model_calls.append("denoise")
        job = replace(job, prompt=await prompt, negative_prompt=negative and await negative)
        [outcome] = await asyncio.to_thread(denoiser.generate_batch, [job])
        return outcome

    defaults = {MODEL: describe_weights(get_variant(MODEL), "emulated:tiny").defaults}
    service = JobService(
        Database.open(args.database_url).jobs,
        JobStore(str(tmp_path)),
        {MODEL: Handle(encode=encode)},
        {MODEL: Handle(generate=generate)},
        args,
        defaults,
        JobViews(UrlSigner(b"k", 60)),
        channel=channel,
    )
    return service, model_calls


def run_job(service: JobService, request: GenerateRequest):
    async def submit_and_wait():
        record = await service.submit(MODEL, request, KEY_ID, "http://test")
        return await service.wait(record.id, KEY_ID)

    return asyncio.run(submit_and_wait())


def stored_files(tmp_path: Path, job_id: str) -> list[str]:
    return sorted(path.name for path in (tmp_path / "jobs" / job_id).rglob("*") if path.is_file())


def png_base64(color=(200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


TEXT_TO_IMAGE = GenerateRequest(prompt="a red circle", width=64, height=64, output_format="png")


@pytest.mark.parametrize("checker", [FlagsNothing, FlagsEverything])
def test_a_flagged_output_is_content_moderated_and_never_stored(tmp_path, encoder, checker):
    service, model_calls = make_service(tmp_path, checker, encoder)
    record = run_job(service, TEXT_TO_IMAGE)
    views = JobViews(UrlSigner(b"k", 60))
    assert sorted(model_calls) == ["denoise", "encode"], "the output exists only after the models ran"
    if checker is FlagsNothing:  # the control: the same job, unflagged, stores its image and shows its URL
        assert record.status == JobStatus.READY and stored_files(tmp_path, record.id) == ["0.png"]
        assert len(views.job(record).images) == 1 and views.bfl_result(record, None).result is not None
        return
    assert record.status == JobStatus.CONTENT_MODERATED
    assert "output image 0 was flagged by the image safety checker (score 1.00 >= 0.40" in record.error
    assert record.images == [] and stored_files(tmp_path, record.id) == []
    assert service.store.load_image(record.id, "0.png") is None
    assert views.job(record).images == [] and views.bfl_result(record, None).result is None


def test_a_flagged_input_image_is_refused_before_any_model_work(tmp_path, encoder):
    service, model_calls = make_service(tmp_path, FlagsEverything, encoder)
    request = GenerateRequest(prompt="make it blue", input_image=png_base64(), width=64, height=64)
    record = run_job(service, request)
    assert record.status == JobStatus.REQUEST_MODERATED
    assert "input image 0 was flagged by the image safety checker (score 1.00 >= 0.40" in record.error
    assert model_calls == [], "neither the text encoder nor the denoiser saw the job"
    assert record.images == [] and stored_files(tmp_path, record.id) == []
    result = JobViews(UrlSigner(b"k", 60)).bfl_result(record, None)
    assert result.status == "Request Moderated" and result.result is None


def test_a_flagged_input_image_is_neither_kept_nor_served_back(tmp_path, encoder):
    service, _model_calls = make_service(tmp_path, FlagsEverything, encoder)
    request = GenerateRequest(prompt="make it blue", input_image=png_base64(), width=64, height=64)
    record = run_job(service, request)
    assert record.status == JobStatus.REQUEST_MODERATED
    assert JobViews(UrlSigner(b"k", 60)).job(record).references == []
    assert not (tmp_path / "refs").exists() or list((tmp_path / "refs").iterdir()) == []


def test_an_unflagged_input_image_runs(tmp_path, encoder):
    """The control for the refusal above: the same edit with a checker that flags nothing reaches the models."""
    service, model_calls = make_service(tmp_path, FlagsNothing, encoder)
    request = GenerateRequest(prompt="make it blue", input_image=png_base64(), width=64, height=64)
    record = run_job(service, request)
    assert record.status == JobStatus.READY and sorted(model_calls) == ["denoise", "encode"]
