"""One Ray Serve instance for all service tests: logical GPUs, tiny emulated models, real HTTP."""

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest

from serve_apps.protocol import JobStatus

API_KEY = "test-key-123"
MODELS = ("flux-2-klein-4b", "flux-2-klein-9b")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def service_args(storage_url: str) -> dict:
    model = {
        "weights": "emulated:tiny",
        "num_gpus": 0.5,
        "num_cpus": 0.25,
        "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.5},
    }
    return {
        "storage_url": storage_url,
        "models": {name: model for name in MODELS},
        "encoder": {"num_cpus": 0.25},
        "ingress": {"num_cpus": 0.25},
        "jobs": {"timeout_s": 120, "max_attempts": 2, "heartbeat_s": 1, "stale_after_s": 6},
    }


@pytest.fixture(scope="session")
def serve_instance(tmp_path_factory):
    """Start Ray with 2 logical GPUs and deploy the app; yields (base_url, args)."""
    import ray
    from ray import serve

    from serve_apps.builder import build_app

    os.environ["FLUX_API_KEYS"] = f"{API_KEY},second-key"
    storage = str(tmp_path_factory.mktemp("storage"))
    port = free_port()
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = service_args(storage)
    serve.run(build_app(args), name="flux", route_prefix="/")
    yield f"http://127.0.0.1:{port}", args
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def base_url(serve_instance) -> str:
    return serve_instance[0]


@pytest.fixture
def client(base_url):
    with httpx.Client(base_url=base_url, headers={"x-key": API_KEY}, timeout=60) as http:
        yield http


def wait_for_job(client: httpx.Client, job_id: str, timeout_s: float = 90) -> dict:
    """Poll get_result until the job leaves Pending; fail if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            response = client.get("/v1/get_result", params={"id": job_id})
        except httpx.TransportError:
            response = None  # an ingress replica restarting: keep polling
        if response is not None and response.status_code == 200:
            result = response.json()
            if result["status"] != JobStatus.PENDING.value:
                return result
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still Pending after {timeout_s} s")
