"""Replicas die; jobs do not get lost. Runs against the shared Ray Serve instance."""

from __future__ import annotations

import time

import pytest
import ray

from tests.serve.conftest import wait_for_job
from tests.serve.test_api import submit

pytestmark = pytest.mark.serve

LONG_JOB = {"width": 1024, "height": 1024, "steps": 40, "seed": 9}


def kill_replica(deployment: str) -> None:
    [name] = [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == "serve" and f"#{deployment}#" in actor["name"]
    ]
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def wait_until_denoising(client, job_id: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["progress"] and job["progress"]["step"] >= 1:
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never started denoising")


def test_denoiser_killed_mid_job_is_retried_not_left_pending(client):
    job = submit(client, **LONG_JOB)
    wait_until_denoising(client, job["id"])
    kill_replica("Denoiser-flux-2-klein-4b")
    result = wait_for_job(client, job["id"], timeout_s=180)
    record = client.get(f"/v1/jobs/{job['id']}").json()
    assert result["status"] in ("Ready", "Error"), result
    assert record["attempts"] == 2, record
    if result["status"] == "Error":
        assert "worker failed" in result["details"]["error"]


def without_signatures(result: dict) -> dict:
    strip = lambda url: url.split("?")[0]  # noqa: E731
    payload = dict(result["result"], sample=strip(result["result"]["sample"]))
    payload["samples"] = [strip(url) for url in payload["samples"]]
    return {**result, "result": payload}


def test_ingress_restart_loses_nothing(client):
    finished = submit(client, seed=1)
    finished_result = wait_for_job(client, finished["id"])
    in_flight = submit(client, **LONG_JOB)
    wait_until_denoising(client, in_flight["id"])

    kill_replica("Ingress")

    after_restart = wait_for_job(client, finished["id"])
    assert after_restart["status"] == "Ready"
    assert without_signatures(after_restart) == without_signatures(finished_result), "URLs are signed anew"
    adopted = wait_for_job(client, in_flight["id"], timeout_s=180)
    assert adopted["status"] == "Ready", adopted
    assert client.get(f"/v1/jobs/{in_flight['id']}").json()["attempts"] == 2
