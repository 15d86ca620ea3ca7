"""Settings of the shared Ray Serve instance (its fixtures are in tests/shared_serve.py) and helpers."""

from __future__ import annotations

import time

import httpx

from serve_apps.api.protocol import JobStatus

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
        "network": {"allowed_private_hosts": ["127.0.0.1"]},
        "models": {name: model for name in MODELS},
        "encoder": {"num_cpus": 0.25},
        "ingress": {"num_cpus": 0.25, "autoscaling": {"min_replicas": 2, "max_replicas": 2}},  # two, as a cluster runs
        # stale after 20 missed seconds: on a loaded 2-core CI box two replicas' SQLite writes can stall a few seconds
        "jobs": {"timeout_s": 300, "max_attempts": 2, "heartbeat_s": 1, "stale_after_s": 20},
        "inputs": {"max_bytes": 2 * 1024 * 1024, "timeout_s": 3},  # small, so the refusals test fast
        # trainings take a quarter of a logical GPU, sample and checkpoint often, so a kill mid-run resumes
        "training": {"num_gpus": 0.25, "num_cpus": 0.5, "sample_every": 4, "checkpoint_every": 4},
    }


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
