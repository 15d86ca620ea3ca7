"""Reproducible images through the service: each file and each job record carry the manifest, and a rerun of a
Ready job makes byte-identical files on CPU, for every served model, a plain generation and an edit alike."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from deployments.image_manifest import read_manifest
from tests.serve.conftest import MODELS, SECOND_KEY, wait_for_job

pytestmark = pytest.mark.serve

REQUEST = {"prompt": "a yellow square on blue", "width": 80, "height": 64, "steps": 2, "seed": 1234}


def ready_job(client: httpx.Client, job_id: str) -> dict:
    assert wait_for_job(client, job_id)["status"] == "Ready"
    return client.get(f"/v1/jobs/{job_id}").json()


def rerun_of(client: httpx.Client, original: dict) -> dict:
    response = client.post(f"/v1/jobs/{original['id']}/rerun")
    assert response.status_code == 200, response.text
    assert response.json()["polling_url"].endswith(f"/v1/get_result?id={response.json()['id']}")
    return ready_job(client, response.json()["id"])


def image_files(client: httpx.Client, job: dict) -> list[bytes]:
    return [client.get(url).content for url in job["images"]]


@pytest.mark.parametrize("model", MODELS)
def test_a_generation_carries_its_manifest_and_reruns_byte_identical(client, model):
    submitted = client.post(f"/v1/{model}", json={**REQUEST, "num_images": 2, "output_format": "png"})
    assert submitted.status_code == 200, submitted.text
    original = ready_job(client, submitted.json()["id"])
    manifest = original["manifest"]
    assert manifest["model"] == model and manifest["weights"] == "emulated:tiny"
    assert len(manifest["weights_sha256"]) == 64 and manifest["device"] == "cpu" and manifest["dtype"] == "float32"
    assert (manifest["seed"], manifest["image"], manifest["prompt"]) == (1234, None, REQUEST["prompt"])
    assert (manifest["width"], manifest["height"], manifest["steps"]) == (80, 64, 2)
    assert set(manifest["versions"]) == {"torch", "diffusers", "flux-serve"}
    files = image_files(client, original)
    in_files = [read_manifest(data) for data in files]
    assert [(m["image"], m["seed"]) for m in in_files] == [(0, 1234), (1, 1235)], "each file has its own seed"
    assert in_files[0] == {**manifest, "image": 0}, "the file's manifest is the job's, for its image"

    rerun = rerun_of(client, original)
    assert rerun["rerun_of"] == original["id"] and rerun["id"] != original["id"]
    assert rerun["rerun"] == {"identical": True, "max_pixel_difference": 0, "note": None}, rerun
    assert image_files(client, rerun) == files
    assert rerun["manifest"] == manifest and rerun["seed"] == 1234


def test_an_edit_with_a_reference_image_reruns_byte_identical(client):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    reference = base64.b64encode(buffer.getvalue()).decode()
    body = {**REQUEST, "prompt": "make it green", "input_image": reference, "output_format": "jpeg"}
    submitted = client.post(f"/v1/{MODELS[0]}", json=body)
    assert submitted.status_code == 200, submitted.text
    original = ready_job(client, submitted.json()["id"])
    (reference_sha256,) = original["manifest"]["references"]
    assert len(reference_sha256) == 64 and original["manifest"]["mask"] is None
    (data,) = image_files(client, original)
    assert read_manifest(data)["references"] == [reference_sha256], "the JPEG carries it too"

    rerun = rerun_of(client, original)
    assert rerun["rerun"]["identical"] is True, rerun
    assert image_files(client, rerun) == [data]


def test_a_rerun_is_refused_for_another_key_a_pending_job_and_an_unknown_one(client):
    slow = {**REQUEST, "steps": 50, "num_images": 4, "width": 256, "height": 256}
    pending = client.post(f"/v1/{MODELS[0]}", json=slow).json()["id"]
    response = client.post(f"/v1/jobs/{pending}/rerun")
    assert response.status_code == 409 and "only a Ready job can be rerun" in response.json()["detail"], response.text
    assert wait_for_job(client, pending, timeout_s=180)["status"] == "Ready"
    other = client.post(f"/v1/jobs/{pending}/rerun", headers={"x-key": SECOND_KEY})
    assert other.status_code == 404 and "No job" in other.json()["detail"]
    unknown = client.post(f"/v1/jobs/{'0' * 32}/rerun")
    assert unknown.status_code == 404
