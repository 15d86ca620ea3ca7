"""What serving costs and what batching buys, through the real service over HTTP.

    python -m bench.serve_overhead --weights emulated:small --size 512

Starts its own Ray (logical GPUs) and Serve app for one variant, then in one run:
(a) one request through HTTP (submit, poll to Ready) versus the same request on the
    model workers in-process: the serving overhead ratio;
(b) 8 concurrent single-image requests with batching on (max_batch_size 8) and off
    (max_batch_size 1, changed live through user_config): images per second.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
from deployments.contracts import GenerationParams

PROMPT = "a red circle on a blue background"
POLL_INTERVAL_S = 0.02


def app_args(model: str, weights: str, storage: str, max_batch_size: int) -> dict:
    return {
        "storage_url": storage,
        "models": {
            model: {
                "weights": weights,
                "num_gpus": 0.5,
                "num_cpus": 2,  # Ray sets the replica's torch threads from num_cpus: match in-process
                "batching": {"max_batch_size": max_batch_size, "batch_wait_timeout_s": 0.2},
            }
        },
        "encoder": {"num_cpus": 0.25},
        "ingress": {"num_cpus": 0.25},
    }


def generate_over_http(client: httpx.Client, model: str, size: int, seed: int) -> tuple[float, dict]:
    """Wall time from submit to Ready, and the job's own per-stage timings."""
    started = time.perf_counter()
    job = client.post(f"/v1/{model}", json={"prompt": PROMPT, "width": size, "height": size, "seed": seed}).json()
    while client.get("/v1/get_result", params={"id": job["id"]}).json()["status"] == "Pending":
        time.sleep(POLL_INTERVAL_S)
    elapsed_s = time.perf_counter() - started
    return elapsed_s, client.get(f"/v1/jobs/{job['id']}").json()["timings_s"]


def concurrent_throughput(client: httpx.Client, model: str, size: int, count: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda seed: generate_over_http(client, model, size, seed), range(count)))
    return count / (time.perf_counter() - started)


def best_in_process_s(model: str, weights: str, size: int, repeats: int) -> float:
    """One request on the model workers in this process (encode + denoise + decode), best of N."""
    encoder = TextEncoder(model, weights=weights)
    denoiser = Denoiser(model, weights=weights)

    def in_process(seed: int) -> float:
        started = time.perf_counter()
        params = GenerationParams.with_defaults(denoiser.defaults, f"{PROMPT} {seed}", width=size, height=size, seed=seed)
        denoiser.generate([encoder.job(params)])
        return time.perf_counter() - started

    in_process(0)
    return min(in_process(seed) for seed in range(1, repeats + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="flux-2-klein-4b")
    parser.add_argument("--weights", default="emulated:small")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    in_process_s = best_in_process_s(args.model, args.weights, args.size, args.repeats)

    import ray
    from ray import serve

    from serve_apps.builder import build_app

    key = secrets.token_urlsafe(16)
    os.environ["FLUX_API_KEYS"] = key
    storage = tempfile.mkdtemp(prefix="flux-bench-")
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 8123})
    serve.run(build_app(app_args(args.model, args.weights, storage, 8)), name="flux", route_prefix="/")
    with httpx.Client(base_url="http://127.0.0.1:8123", headers={"x-key": key}, timeout=300) as client:
        generate_over_http(client, args.model, args.size, 0)
        served_s, stages = min(generate_over_http(client, args.model, args.size, seed) for seed in range(1, args.repeats + 1))
        batched_ips = concurrent_throughput(client, args.model, args.size, 8)
        serve.run(build_app(app_args(args.model, args.weights, storage, 1)), name="flux", route_prefix="/")
        unbatched_ips = concurrent_throughput(client, args.model, args.size, 8)
    serve.shutdown()
    ray.shutdown()

    print(f"model {args.model}, weights {args.weights}, {args.size}x{args.size}, 4 steps")
    print("| measurement | value | ratio |")
    print("|---|---|---|")
    print(f"| one request, in-process workers | {in_process_s:.2f} s | 1.00 |")
    print(f"| one request, through the service (HTTP submit + poll) | {served_s:.2f} s | {served_s / in_process_s:.2f}x |")
    print("| where the served request's time went | " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()) + " | |")
    print(f"| 8 concurrent requests, batching off (max_batch_size 1) | {unbatched_ips:.2f} images/s | 1.00 |")
    print(f"| 8 concurrent requests, batching on (max_batch_size 8) | {batched_ips:.2f} images/s | {batched_ips / unbatched_ips:.2f}x |")


if __name__ == "__main__":
    main()
