"""Step previews over real HTTP: the events stream and GET /v1/jobs/{id} show the image as it forms, and
`preview: false` shows none."""

from __future__ import annotations

import base64
import io
import time
from http import HTTPStatus

import pytest
from PIL import Image

from tests.serve.conftest import wait_for_job
from tests.serve.test_api import submit
from tests.serve.test_events import read_events

pytestmark = pytest.mark.serve

FORMING_JOB = {"width": 512, "height": 512, "steps": 16, "seed": 3}
DATA_URL = "data:image/jpeg;base64,"


def picture(preview: dict) -> Image.Image:
    assert preview["image"].startswith(DATA_URL), preview["image"][:40]
    return Image.open(io.BytesIO(base64.b64decode(preview["image"][len(DATA_URL) :])))


def test_the_events_stream_brings_pictures_of_the_image_as_it_forms(client):
    job_id = submit(client, **FORMING_JOB)["id"]
    events = read_events(client, f"/v1/jobs/{job_id}/events")
    assert events[-1].name == "done" and events[-1].data["preview"] is None, "a finished job shows no preview"
    previews = [event.data["preview"] for event in events if event.name == "progress" and "preview" in event.data]
    assert previews, [event.data for event in events if event.name == "progress"]
    steps = [preview["step"] for preview in previews]
    assert steps == sorted(set(steps)) and all(1 <= step <= FORMING_JOB["steps"] for step in steps), steps
    for preview in previews:
        image = picture(preview)
        assert image.format == "JPEG" and image.size == (64, 64), "an eighth of the side, a few KB"
        assert len(preview["image"]) < 8_000


def test_a_running_job_shows_its_latest_preview_and_none_once_it_is_ready(client):
    job_id = submit(client, **{**FORMING_JOB, "steps": 30})["id"]
    seen, deadline = None, time.monotonic() + 120
    while seen is None and time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] != "Pending":
            break
        seen = job["preview"]
        time.sleep(0.05)
    assert seen is not None, "GET /v1/jobs/{id} showed no preview while the job ran"
    assert picture(seen).size == (64, 64) and 1 <= seen["step"] <= 30
    assert wait_for_job(client, job_id)["status"] == "Ready"
    assert client.get(f"/v1/jobs/{job_id}").json()["preview"] is None
    assert client.get("/v1/get_result", params={"id": job_id}).json()["preview"] is None


def test_preview_false_makes_none_and_a_wrong_value_is_refused(client):
    job_id = submit(client, **{**FORMING_JOB, "preview": False})["id"]
    events = read_events(client, f"/v1/jobs/{job_id}/events")
    assert events[-1].name == "done"
    assert not any("preview" in event.data for event in events if event.name == "progress")
    refused = client.post("/v1/flux-2-klein-4b", json={"prompt": "a red circle", "preview": "sometimes"})
    assert refused.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "preview" in refused.text
