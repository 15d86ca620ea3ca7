"""One Ray Serve instance for all service tests: logical GPUs, tiny emulated models, real HTTP."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from serve_apps.protocol import JobStatus

from tests.conftest import free_port

API_KEY = "test-key-123"
SECOND_KEY = "second-key"
URL_SIGNING_KEY = "test-url-signing-key"
BLOCKED_WORD = "forbiddenword"
CONCURRENT_JOBS_PER_KEY = 8
MODELS = ("flux-2-klein-4b", "flux-2-klein-9b")


def service_args(storage_url: str, storage_options: dict, lora_root: str) -> dict:
    model = {
        "weights": "emulated:tiny",
        "num_gpus": 0.5,
        "num_cpus": 0.25,
        "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.5},
    }
    return {
        "storage_url": storage_url,
        "storage_options": storage_options,
        "limits": {"concurrent_jobs_per_key": CONCURRENT_JOBS_PER_KEY, "submits_per_minute_per_key": 1000},
        "moderation": {"blocked_patterns": [BLOCKED_WORD]},
        "loras": {"allowed_roots": [lora_root], "max_loaded_per_replica": 2},
        "webhooks": {"max_attempts": 3, "initial_backoff_s": 0.2, "timeout_s": 5},
        "models": {name: model for name in MODELS},
        "encoder": {"num_cpus": 0.25},
        "ingress": {"num_cpus": 0.25},
        "jobs": {"timeout_s": 120, "max_attempts": 2, "heartbeat_s": 1, "stale_after_s": 6},
    }


@pytest.fixture(scope="session")
def serve_instance(tmp_path_factory):
    """Ray with 2 logical GPUs and the app deployed, storing in a local folder.

    Yields (base_url, args). Replicas inherit this process's environment: the keys and the
    URL signing key. (The store's S3 path is tested against a loopback S3 server in
    tests/unit/test_s3_store.py; a whole Serve instance on it is too slow for CI.)
    """
    import ray
    from ray import serve

    from serve_apps.builder import build_app

    os.environ["FLUX_API_KEYS"] = f"{API_KEY},{SECOND_KEY}"
    os.environ["FLUX_URL_SIGNING_KEY"] = URL_SIGNING_KEY
    port = free_port()
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = service_args(str(tmp_path_factory.mktemp("storage")), {}, str(tmp_path_factory.mktemp("loras")))
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
