"""Production API over real HTTP: OpenAI client, cancel, webhooks, idempotency, limits,
signed URLs, moderation, history."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from openai import OpenAI
from PIL import Image

from serve_apps.security.signing import UrlSigner
from tests.serve.conftest import (
    API_KEY,
    BLOCKED_WORD,
    CONCURRENT_JOBS_PER_KEY,
    SECOND_KEY,
    URL_SIGNING_KEY,
    wait_for_job,
)
from tests.serve.test_api import submit
from tests.serve.test_faults import LONG_JOB, wait_until_denoising

pytestmark = pytest.mark.serve


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_openai_client_generates_images(base_url, response_format):
    client = OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, timeout=120)
    result = client.images.generate(
        model="flux-2-klein-4b", prompt="a red circle", n=2, size="128x64", response_format=response_format
    )
    assert len(result.data) == 2
    for image in result.data:
        data = base64.b64decode(image.b64_json) if response_format == "b64_json" else httpx.get(image.url).content
        assert Image.open(io.BytesIO(data)).size == (128, 64)
        assert image.revised_prompt == "a red circle"


def test_openai_client_gets_clear_errors(base_url):
    import openai

    client = OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="This server serves"):
        client.images.generate(model="dall-e-3", prompt="x")
    with pytest.raises(openai.UnprocessableEntityError, match="multiple of 16"):
        client.images.generate(model="flux-2-klein-4b", prompt="x", size="100x100")
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0).images.generate(prompt="x")


def test_cancel_a_running_job_stops_it_at_the_next_step(client):
    job = submit(client, **LONG_JOB)
    wait_until_denoising(client, job["id"])
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    result = wait_for_job(client, job["id"])
    record = client.get(f"/v1/jobs/{job['id']}").json()
    assert record["status"] == "Cancelled" and record["images"] == []
    assert record["progress"]["step"] < record["progress"]["total"], "stopped before the last step"
    assert result["status"] == "Error" and "cancelled" in result["details"]["error"], "BFL clients stop polling"


def test_cancel_a_queued_job_means_it_never_runs(client):
    running = submit(client, "flux-2-klein-9b", **LONG_JOB)
    queued = submit(client, "flux-2-klein-9b", **{**LONG_JOB, "height": 512})
    client.post(f"/v1/jobs/{queued['id']}/cancel")
    wait_until_denoising(client, running["id"])
    client.post(f"/v1/jobs/{running['id']}/cancel")
    wait_for_job(client, queued["id"])
    record = client.get(f"/v1/jobs/{queued['id']}").json()
    assert record["status"] == "Cancelled"
    assert record["progress"] is None, "no denoising step ever ran for it"
    assert client.post(f"/v1/jobs/{queued['id']}/cancel").json()["status"] == "Cancelled", "cancel is idempotent"


class WebhookReceiver(BaseHTTPRequestHandler):
    received: list[tuple[dict, bytes]] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        WebhookReceiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_signed_webhook_on_completion(client):
    server = HTTPServer(("127.0.0.1", 0), WebhookReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "whsec-0123456789"
    try:
        job = submit(client, webhook_url=f"http://127.0.0.1:{server.server_port}/hook", webhook_secret=secret)
        wait_for_job(client, job["id"])
        deadline = time.monotonic() + 30
        while not WebhookReceiver.received and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.shutdown()
    headers, body = WebhookReceiver.received[0]
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(headers["webhook-signature"], expected)
    payload = json.loads(body)
    assert payload["id"] == job["id"] and payload["status"] == "Ready" and len(payload["images"]) == 1
    deadline = time.monotonic() + 10
    while not client.get(f"/v1/jobs/{job['id']}").json()["webhook_deliveries"] and time.monotonic() < deadline:
        time.sleep(0.1)
    [delivery] = client.get(f"/v1/jobs/{job['id']}").json()["webhook_deliveries"]
    assert delivery["delivered"] and delivery["status_code"] == 200


def test_idempotency_key_returns_the_same_job(client):
    first = client.post(
        "/v1/flux-2-klein-4b",
        json={"prompt": "once", "width": 64, "height": 64},
        headers={"Idempotency-Key": "order-42"},
    )
    again = client.post(
        "/v1/flux-2-klein-4b",
        json={"prompt": "once", "width": 64, "height": 64},
        headers={"Idempotency-Key": "order-42"},
    )
    other = client.post(
        "/v1/flux-2-klein-4b",
        json={"prompt": "once", "width": 64, "height": 64},
        headers={"Idempotency-Key": "order-43"},
    )
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]


def test_concurrent_job_limit_gives_429_with_retry_after(base_url):
    with httpx.Client(base_url=base_url, headers={"x-key": SECOND_KEY}, timeout=60) as second:
        jobs = [submit(second, **{**LONG_JOB, "seed": seed}) for seed in range(CONCURRENT_JOBS_PER_KEY)]
        over = second.post("/v1/flux-2-klein-4b", json={"prompt": "one more"})
        for job in jobs:
            second.post(f"/v1/jobs/{job['id']}/cancel")
        assert over.status_code == 429
        assert int(over.headers["retry-after"]) >= 1
        assert f"{CONCURRENT_JOBS_PER_KEY} jobs" in over.json()["detail"]
        for job in jobs:
            wait_for_job(second, job["id"])


def test_result_urls_are_signed_and_expire(client, base_url):
    result = wait_for_job(client, submit(client)["id"])
    url = result["result"]["sample"]
    assert httpx.get(url).status_code == 200, "opens without a key"
    path = url.split(base_url)[1].split("?")[0]
    assert httpx.get(base_url + path).status_code == 403
    assert httpx.get(url.replace("sig=", "sig=0")).status_code == 403
    expired = UrlSigner(URL_SIGNING_KEY.encode(), ttl_s=-1).sign(path)
    response = httpx.get(base_url + expired)
    assert response.status_code == 403 and "expired" in response.json()["detail"]


def test_moderated_prompt_never_reaches_a_model(client):
    job = submit(client, prompt=f"a {BLOCKED_WORD} picture")
    result = client.get("/v1/get_result", params={"id": job["id"]}).json()
    assert result["status"] == "Request Moderated" and BLOCKED_WORD in result["details"]["error"]
    record = client.get(f"/v1/jobs/{job['id']}").json()
    assert record["attempts"] == 0 and record["progress"] is None


def test_history_pages_and_privacy(client, base_url):
    with httpx.Client(base_url=base_url, headers={"x-key": SECOND_KEY}, timeout=60) as second:
        mine = [submit(second, prompt=f"history {n}")["id"] for n in range(3)]
        page = second.get("/v1/jobs", params={"limit": 2}).json()
        assert [job["id"] for job in page["jobs"]] == mine[::-1][:2]
        rest = second.get("/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        assert rest["jobs"][0]["id"] == mine[0]
        assert client.get(f"/v1/jobs/{mine[0]}").status_code == 404, "another key's job is not visible"
        assert client.get("/v1/get_result", params={"id": mine[0]}).json()["status"] == "Task not found"
        assert second.get("/v1/jobs", params={"cursor": "../../x"}).status_code == 422


def test_webhook_to_a_private_address_is_refused_at_submit(client):
    for url in ("http://10.0.0.5/hook", "http://169.254.169.254/latest/meta-data/"):
        response = client.post(
            "/v1/flux-2-klein-4b", json={"prompt": "x", "width": 64, "height": 64, "webhook_url": url}
        )
        assert response.status_code == 422, response.text
        [problem] = response.json()["detail"]
        assert problem["loc"] == ["body", "webhook_url"] and "only calls public addresses" in problem["msg"]
