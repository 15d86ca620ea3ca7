"""Images in through every API, against the shared Ray Serve instance: BFL's input_image fields, OpenAI's
images.edit (one image, several, a mask), uploads, every refused input, and a retry from stored references."""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from openai import OpenAI
from PIL import Image

from tests.serve.conftest import API_KEY, SECOND_KEY, wait_for_job
from tests.serve.test_faults import kill_replicas, wait_until_denoising

pytestmark = pytest.mark.serve

MODEL = "flux-2-klein-4b"
EDIT = {"prompt": "make the background yellow", "width": 96, "height": 64, "steps": 2, "seed": 5}


def png_bytes(size=(64, 64), color=(200, 30, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class ImageServer(BaseHTTPRequestHandler):
    """Loopback test server: an image, a redirect to the metadata address, a slow and a huge body."""

    def do_GET(self):
        if self.path == "/blue.png":
            body = png_bytes(color=(30, 30, 200))
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/to-metadata":
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        elif self.path == "/slow.png":
            time.sleep(6)
            self.send_response(HTTPStatus.OK)
            self.end_headers()
        elif self.path == "/huge.png":
            self.send_response(HTTPStatus.OK)
            self.end_headers()  # no Content-Length: the cap must hold while streaming
            for _ in range(64):
                self.wfile.write(b"\0" * 65536)
        else:
            self.send_response(HTTPStatus.NOT_FOUND)
            self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def image_host():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImageServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def submit_edit(client: httpx.Client, **fields) -> httpx.Response:
    return client.post(f"/v1/{MODEL}", json={**EDIT, **fields})


def image_size(url: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(httpx.get(url, timeout=30).content)).size


def test_bfl_request_with_two_references_is_ready_at_the_asked_size(client, image_host):
    response = submit_edit(client, input_image=b64(png_bytes()), input_image_2=f"{image_host}/blue.png", num_images=2)
    assert response.status_code == 200, response.text
    submitted = response.json()
    assert submitted["input_mp"] == pytest.approx(2 * 64 * 64 / 2**20, abs=1e-3)
    assert submitted["output_mp"] == pytest.approx(2 * 96 * 64 / 2**20, abs=1e-3) and submitted["cost"] > 0
    result = wait_for_job(client, submitted["id"])
    assert result["status"] == "Ready", result
    assert "preview" in result and (result["result"]["width"], result["result"]["height"]) == (96, 64)
    assert [image_size(url) for url in result["result"]["samples"]] == [(96, 64), (96, 64)]
    job = client.get(f"/v1/jobs/{submitted['id']}").json()
    assert [image_size(url) for url in job["references"]] == [(64, 64), (64, 64)], "stored, signed"


def test_upload_then_use_its_id_private_to_the_key(client, base_url):
    response = client.post("/v1/uploads", files={"file": ("red.png", png_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    upload = response.json()
    assert upload["id"].startswith("upload_") and (upload["width"], upload["height"]) == (64, 64)
    result = wait_for_job(client, submit_edit(client, input_image=upload["id"]).json()["id"])
    assert result["status"] == "Ready", result
    other = httpx.post(
        f"{base_url}/v1/{MODEL}", json={**EDIT, "input_image": upload["id"]}, headers={"x-key": SECOND_KEY}
    )
    assert other.status_code == 422 and other.json()["detail"][0]["loc"][-1] == "input_image"


def openai_client(base_url: str) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, timeout=120, max_retries=0)


def test_openai_edit_with_one_image_several_images_and_a_mask(base_url):
    client = openai_client(base_url)
    one = client.images.edit(image=("red.png", png_bytes(), "image/png"), prompt="make it blue", size="96x64")
    several = client.images.edit(
        image=[("red.png", png_bytes(), "image/png"), ("blue.png", png_bytes(color=(0, 0, 255)), "image/png")],
        prompt="put them together",
        size="64x64",
        n=2,
        response_format="b64_json",
    )
    hole = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    hole.paste((0, 0, 0, 0), (16, 16, 48, 48))
    mask = io.BytesIO()
    hole.save(mask, format="PNG")
    masked = client.images.edit(
        image=("red.png", png_bytes(), "image/png"),
        mask=("mask.png", mask.getvalue(), "image/png"),
        prompt="a hole",
        size="64x64",
    )
    assert image_size(one.data[0].url) == (96, 64)
    assert [Image.open(io.BytesIO(base64.b64decode(d.b64_json))).size for d in several.data] == [(64, 64)] * 2
    assert image_size(masked.data[0].url) == (64, 64)


def test_openai_edit_errors_come_in_openai_shape(base_url):
    import openai

    with pytest.raises(openai.UnprocessableEntityError) as caught:
        openai_client(base_url).images.edit(image=("x.png", b"not an image", "image/png"), prompt="x")
    error = caught.value.body
    assert error["param"] == "image[0]" and "not an image" in error["message"]


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"input_image": "http://10.0.0.5/a.png"}, "input_image", "private address"),
        ({"input_image": "http://169.254.169.254/latest/meta-data/"}, "input_image", "link-local"),
        ({"input_image": "http://127.0.0.2/a.png"}, "input_image", "loopback"),
        ({"input_image": "file:///etc/passwd"}, "input_image", "file:// URLs are not fetched"),
        ({"input_image": "{host}/to-metadata"}, "input_image", "169.254.169.254"),
        ({"input_image_2": "{host}/huge.png"}, "input_image_2", "larger than"),
        ({"input_image": "{host}/slow.png"}, "input_image", "did not finish downloading"),
        ({"input_image": b64(b"plain text")}, "input_image", "not an image"),
        ({"input_image": "{bomb}"}, "input_image", "megapixels"),
        ({"input_image": "{truncated}"}, "input_image", "truncated"),
        ({"input_image": "upload_" + "0" * 32}, "input_image", "no upload"),
        ({f"input_image_{n}": "{red}" for n in range(2, 6)} | {"input_image": "{red}"}, "input_image_5", "at most 4"),
    ],
)
def test_each_bad_input_gets_a_422_naming_its_field(client, image_host, fields, field, words):
    from tests.unit.test_inputs import bomb_png

    noise = io.BytesIO()
    Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)).save(noise, format="PNG")
    values = {
        "host": image_host,
        "bomb": b64(bomb_png(20000, 20000)),
        "truncated": b64(noise.getvalue()[:2000]),
        "red": b64(png_bytes()),
    }
    response = submit_edit(client, **{name: value.format(**values) for name, value in fields.items()})
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"][-1] == field and words in problem["msg"], problem


def test_denoiser_killed_mid_edit_retries_from_stored_references(client):
    response = submit_edit(client, input_image=b64(png_bytes()), width=1024, height=1024, steps=40, seed=9)
    job_id = response.json()["id"]
    wait_until_denoising(client, job_id)
    kill_replicas(f"Denoiser-{MODEL}")
    result = wait_for_job(client, job_id, timeout_s=180)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["attempts"] == 2 and len(job["references"]) == 1, job
    assert result["status"] == "Ready" or "reference" not in result["details"]["error"], result
