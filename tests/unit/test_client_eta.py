"""The client's side of ETAs and deadlines (issue 28): submit_job answers eta_s, deadline_s is sent, a refusal is a
FluxAPIError 429 with the server's message; the CLI prints 'about N s' after submit (httpx.MockTransport, no Ray)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from flux_client import AsyncFluxClient, FluxAPIError, FluxClient

JOB_ID = "a" * 32
REFUSAL = "deadline_s 1 cannot be met: this job would be Ready in about 9.0 s on flux-2-klein-4b."


def answering(seen: list):
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if body.get("deadline_s") == 1:
            return httpx.Response(429, json={"detail": REFUSAL, "eta_s": 9.0, "fits": {"steps": 1}})
        return httpx.Response(200, json={"id": JOB_ID, "polling_url": "u", "eta_s": 2.5})

    return handler


def test_submit_job_answers_the_eta_and_sends_the_deadline():
    seen = []
    with FluxClient("http://flux.test", "k", transport=httpx.MockTransport(answering(seen))) as flux:
        assert flux.submit_job("a fox", deadline_s=30)["eta_s"] == 2.5
        assert flux.submit("a fox") == JOB_ID
        with pytest.raises(FluxAPIError) as refused:
            flux.submit("a fox", deadline_s=1)
    assert seen[0]["deadline_s"] == 30 and "deadline_s" not in seen[1], "no deadline: the field is left out"
    assert refused.value.status_code == 429 and "cannot be met" in refused.value.message


def test_the_async_client_answers_the_same():
    async def run():
        async with AsyncFluxClient("http://flux.test", "k", transport=httpx.MockTransport(answering([]))) as flux:
            return await flux.submit_job("a fox")

    assert asyncio.run(run())["eta_s"] == 2.5


def test_the_cli_says_about_how_long_after_submit_and_sends_its_deadline(tmp_path, monkeypatch, capsys):
    import flux_client.client
    from flux_client.cli import main

    sent = []
    image_url = f"http://flux.test/v1/images/{JOB_ID}/0.png?exp=1&sig=x"

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST":
            sent.append(json.loads(request.content))
            return httpx.Response(200, json={"id": JOB_ID, "polling_url": "u", "eta_s": 12.4})
        if path.endswith("/events"):
            return httpx.Response(404, json={"detail": "no events here"})
        if path == f"/v1/jobs/{JOB_ID}":
            return httpx.Response(200, json={"id": JOB_ID, "status": "Ready", "seed": 7, "images": [image_url]})
        return httpx.Response(200, content=b"png bytes")

    class MockedClient(flux_client.client.FluxClient):
        def __init__(self, base_url, api_key=None, **options):
            super().__init__("http://flux.test", api_key, transport=httpx.MockTransport(handler), **options)

    monkeypatch.setattr(flux_client.client, "FluxClient", MockedClient)
    code = main(["generate", "a fox", "--deadline", "30", "--out", str(tmp_path), "--key", "k"])
    assert code == 0, capsys.readouterr().err
    assert sent[0]["deadline_s"] == 30
    assert f"job {JOB_ID[:8]}: about 12 s" in capsys.readouterr().err
