"""A real two-node Ray cluster on loopback (a head and a worker, one logical GPU each), set up as the
README prescribes for a cluster: images in S3 (a moto server on loopback), job state in PostgreSQL
(a server on loopback). `serve deploy` of the config, replicas on both nodes under load, and a
worker node killed without losing a job. Everything goes through Ray's CLI and HTTP, as on a real cluster."""

from __future__ import annotations

import io
import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from tests.conftest import free_port
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent
KEY = "cluster-test-key"
LONG = {"width": 512, "height": 512, "steps": 30}
LONGER = {"width": 1024, "height": 1024, "steps": 40}
MAX_LOAD_WAVES = 4


def ray_cli(*args: str, env: dict) -> str:
    run = subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, env=env, timeout=180)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return run.stdout


def raylet_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "ray/core/src/ray/raylet/raylet"], capture_output=True, text=True).stdout
    return sorted(int(pid) for pid in found.split())


@pytest.fixture(scope="module")
def postgres_url():
    try:
        server = PostgresServer()
    except RuntimeError as missing:
        pytest.skip(str(missing))
    yield server.new_database()
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_endpoint, postgres_url):
    work = tmp_path_factory.mktemp("cluster")
    env = {
        **os.environ,
        "FLUX_API_KEYS": KEY,
        "FLUX_URL_SIGNING_KEY": "cluster-signing-key",
        "RAY_AUTH_MODE": "token",  # Ray's token authentication, the same token on every node
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    gcs_port, dashboard_port, http_port = free_port(), free_port(), free_port()
    head_metrics_port, worker_metrics_port = free_port(), free_port()
    before = set(raylet_pids())
    ray_cli(
        "start",
        "--head",
        f"--port={gcs_port}",
        f"--dashboard-port={dashboard_port}",
        "--num-cpus=2",
        "--num-gpus=1",
        f"--metrics-export-port={head_metrics_port}",
        "--disable-usage-stats",
        env=env,
    )
    head_raylets = set(raylet_pids()) - before
    ray_cli(
        "start",
        f"--address=127.0.0.1:{gcs_port}",
        "--num-cpus=2",
        "--num-gpus=1",
        f"--metrics-export-port={worker_metrics_port}",
        env=env,
    )
    worker_raylets = set(raylet_pids()) - before - head_raylets
    model = {
        "weights": "emulated:tiny",
        "num_gpus": 1,
        "num_cpus": 0.5,
        "batching": {"max_batch_size": 1, "batch_wait_timeout_s": 0},
        "autoscaling": {
            "min_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 1,
            "upscale_delay_s": 0,
            "downscale_delay_s": 600,
        },
    }
    config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": http_port},
        "applications": [
            {
                "name": "flux",
                "route_prefix": "/",
                "import_path": "serve_apps.builder:build_app",
                "args": {
                    "storage_url": "s3://flux-test/cluster",
                    "storage_options": {"endpoint_url": s3_endpoint},
                    "database_url": postgres_url,
                    "models": {"flux-2-klein-4b": model},
                    "encoder": {"num_cpus": 0.25},
                    "ingress": {"num_cpus": 0.25},
                    "jobs": {"heartbeat_s": 1, "stale_after_s": 6, "max_attempts": 3},
                },
            }
        ],
    }
    config_path = work / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    deploy = subprocess.run(
        [str(BIN / "serve"), "deploy", str(config_path), "--address", f"http://127.0.0.1:{dashboard_port}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    base = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/ping", timeout=2).text == "it works":
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    metrics_urls = [f"http://127.0.0.1:{port}/metrics" for port in (head_metrics_port, worker_metrics_port)]
    yield base, worker_raylets, metrics_urls
    ray_cli("stop", "--force", env=env)


def submit_and_wait(client: httpx.Client, seed: int, size: dict = LONG, timeout_s: float = 300) -> dict:
    job = client.post("/v1/flux-2-klein-4b", json={"prompt": "a red circle", "seed": seed, **size}).json()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = client.get("/v1/get_result", params={"id": job["id"]}).json()
            if result["status"] != "Pending":
                return client.get(f"/v1/jobs/{job['id']}").json()
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"job {job['id']} still Pending after {timeout_s} s")


def test_replicas_spread_over_both_nodes_and_a_dead_node_loses_no_job(cluster):
    base, worker_raylets, _metrics_urls = cluster
    with httpx.Client(base_url=base, headers={"x-key": KEY}, timeout=60) as client:
        wave_started = time.time()
        first_wave = []
        for wave in range(MAX_LOAD_WAVES):  # sustained load: a slow replica start must not fail the test
            with ThreadPoolExecutor(8) as pool:
                first_wave += pool.map(lambda seed: submit_and_wait(client, seed), range(8 * wave, 8 * wave + 8))
            if len({job["batch"]["node"] for job in first_wave}) == 2:
                break
        assert all(job["status"] == "Ready" for job in first_wave), first_wave
        nodes = {job["batch"]["node"] for job in first_wave}
        assert len(nodes) == 2, f"autoscaled to a replica on each node after {len(first_wave)} jobs: {nodes}"
        first_node = min(first_wave, key=lambda job: job["created_at"])["batch"]["node"]
        scaled_up_s = min(
            job["created_at"] + job["timings_s"]["queue"] + job["timings_s"]["encode"] - wave_started
            for job in first_wave
            if job["batch"]["node"] != first_node
        )
        print(
            f"\nscale 1 -> 2 replicas under load: first job on the new node started {scaled_up_s:.1f} s after the load began"
        )

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(submit_and_wait, client, 100 + seed, LONGER) for seed in range(4)]
            time.sleep(6)
            for pid in worker_raylets:
                os.kill(pid, signal.SIGKILL)
            second_wave = [future.result() for future in futures]
    print("after killing the worker node:", [(job["status"], job["attempts"]) for job in second_wave])
    assert all(job["status"] == "Ready" for job in second_wave), [(j["status"], j["error"]) for j in second_wave]
    assert any(job["attempts"] >= 2 for job in second_wave), "a job was running on the killed node and was retried"
    with httpx.Client(base_url=base, headers={"x-key": KEY}, timeout=60) as client:
        image = client.get(second_wave[0]["images"][0])
    assert image.status_code == 200, image.text
    assert Image.open(io.BytesIO(image.content)).size == (1024, 1024), "the image is read back from S3"


def _scrape(url: str) -> str:
    try:
        return httpx.get(url, timeout=10).text
    except httpx.HTTPError:  # the worker node is gone once the first test has killed it
        return ""


def test_custom_metrics_reach_prometheus(cluster):
    """What the dashboard's Metrics view reads: Ray's Prometheus export of our metrics."""
    base, _worker_raylets, metrics_urls = cluster
    with httpx.Client(base_url=base, headers={"x-key": KEY}, timeout=60) as client:
        assert submit_and_wait(client, seed=7)["status"] == "Ready"  # an image made on a node still alive
    deadline = time.monotonic() + 60
    exported = ""
    while time.monotonic() < deadline and "flux_images_generated_total" not in exported:
        exported = "".join(_scrape(url) for url in metrics_urls)  # each node exports its own replicas' metrics
        time.sleep(2)
    for name in (
        "flux_images_generated_total",
        "flux_batch_images",
        "flux_cold_starts_total",
        "flux_gpu_seconds_total",
        "flux_step_seconds",
        "flux_jobs_in_flight",
        "flux_cost_usd_total",
    ):
        assert name in exported, f"{name} not exported"
