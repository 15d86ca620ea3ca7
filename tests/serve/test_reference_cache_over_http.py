"""A repeated reference costs nothing, through the service (issue 28): the second job with the same reference finds
it prepared on the replica (routed there by its first reference) and says so in GET /v1/jobs/{id}."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from tests.serve.conftest import wait_for_job

pytestmark = pytest.mark.serve

MODEL = "flux-2-klein-4b"
EDIT = {"prompt": "make the background yellow", "width": 64, "height": 64, "steps": 2, "seed": 11}


def reference_b64() -> str:
    """A colour no other test sends, so no earlier job of the shared service prepared it."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (17, 201, 93)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def ready_edit(client: httpx.Client) -> dict:
    response = client.post(f"/v1/{MODEL}", json={**EDIT, "input_image": reference_b64(), "output_format": "png"})
    assert response.status_code == 200, response.text
    assert wait_for_job(client, response.json()["id"])["status"] == "Ready"
    return client.get(f"/v1/jobs/{response.json()['id']}").json()


def test_the_second_job_with_the_same_reference_finds_it_prepared(client):
    first, second = ready_edit(client), ready_edit(client)
    assert (first["cache"], second["cache"]) == ({"references": "miss"}, {"references": "hit"})
    assert first["timings_s"]["reference_prepare"] > 0 and second["timings_s"]["reference_prepare"] >= 0
    files = [[client.get(url).content for url in job["images"]] for job in (first, second)]
    assert files[0] == files[1], "a prepared reference makes the same bytes"
    plain = client.post(f"/v1/{MODEL}", json=EDIT)
    assert wait_for_job(client, plain.json()["id"])["status"] == "Ready"
    assert client.get(f"/v1/jobs/{plain.json()['id']}").json()["cache"] == {}
