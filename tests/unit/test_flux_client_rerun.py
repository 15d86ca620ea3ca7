"""flux_client's rerun without a server (httpx.MockTransport): the op, sync and async, and the CLI's verdict."""

from __future__ import annotations

import asyncio
import functools

import httpx
import pytest

from flux_client import AsyncFluxClient, FluxClient
from flux_client import client as client_module
from flux_client.cli import main as cli_main

ORIGINAL, NEW = "a" * 32, "b" * 32


def rerun_job(**verdict) -> dict:
    rerun = {"identical": True, "max_pixel_difference": 0, "note": None, **verdict}
    return {"id": NEW, "status": "Ready", "stage": "done", "rerun_of": ORIGINAL, "rerun": rerun, "images": ["u"]}


def server(job: dict, requests: list):
    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path == f"/v1/jobs/{ORIGINAL}/rerun":
            return httpx.Response(200, json={"id": NEW, "polling_url": f"http://flux.test/v1/get_result?id={NEW}"})
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"detail": "no events here"})
        if request.url.path == f"/v1/jobs/{NEW}":
            return httpx.Response(200, json=job)
        return httpx.Response(404, json={"detail": f"No job {ORIGINAL!r} for this key"})

    return handler


def test_rerun_posts_to_the_jobs_rerun_route_sync_and_async():
    requests: list = []
    transport = httpx.MockTransport(server(rerun_job(), requests))
    with FluxClient("http://flux.test", "k", transport=transport) as flux:
        assert flux.rerun(ORIGINAL)["id"] == NEW

    async def run():
        async with AsyncFluxClient("http://flux.test", "k", transport=transport) as flux:
            return await flux.rerun(ORIGINAL)

    assert asyncio.run(run())["id"] == NEW
    assert [(r.method, r.url.path) for r in requests] == [("POST", f"/v1/jobs/{ORIGINAL}/rerun")] * 2
    assert all(r.headers["x-key"] == "k" for r in requests)


@pytest.fixture
def serve_job(monkeypatch):
    """Points the CLI's FluxClient at a mock server answering `job` for the rerun."""

    def use(job: dict) -> None:
        transport = httpx.MockTransport(server(job, []))
        patched = functools.partial(client_module.FluxClient, transport=transport, poll_interval_s=0)
        monkeypatch.setattr(client_module, "FluxClient", patched)

    return use


def cli(*argv: str) -> int:
    return cli_main([*argv, "--url", "http://flux.test", "--key", "k"])


def test_the_cli_prints_identical_and_exits_0(serve_job, capsys):
    serve_job(rerun_job())
    assert cli("rerun", ORIGINAL) == 0
    assert capsys.readouterr().out.strip() == f"identical: job {NEW} made the same bytes as job {ORIGINAL}"


def test_the_cli_prints_the_largest_pixel_difference_and_exits_1(serve_job, capsys):
    serve_job(rerun_job(identical=False, max_pixel_difference=3))
    assert cli("rerun", ORIGINAL) == 1
    assert "largest pixel difference 3 of 255" in capsys.readouterr().out


def test_the_cli_says_what_the_server_refused_and_exits_2(serve_job, capsys):
    serve_job(rerun_job())
    assert cli("rerun", "c" * 32) == 2
    assert "HTTP 404: No job" in capsys.readouterr().err
