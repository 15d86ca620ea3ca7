"""What serving costs and what batching buys, through the real service over HTTP.

    python -m bench.serve_overhead --weights emulated:small --size 512

Starts its own Ray (logical GPUs) and Serve app for one variant, then in one run:
(a) one request through HTTP versus the same request on the model workers in-process: the serving
    overhead ratio, waited for by polling every 20 ms and by the events stream (as flux_client waits);
(b) 8 concurrent single-image requests with batching on (max_batch_size 8) and off
    (max_batch_size 1, changed live through user_config): images per second.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from dataclasses import replace

import httpx

from bench.harness import bench_arguments
from bench.runners import SEED, STAGES, Cell, CellRun, HttpRunner, InProcessRunner, Sample

PROMPT = "a red circle on a blue background"
CONCURRENT_REQUESTS = 8
PORT = 8123


def one_model_app(model: str, weights: str, storage: str, **model_options) -> dict:
    """A served app of one model for a bench: its denoiser on half the logical GPU with 2 CPUs (Ray sets the
    replica's torch threads from num_cpus: as many as in-process), encoder and ingress on a quarter CPU each."""
    return {
        "storage_url": storage,
        "models": {model: {"weights": weights, "num_gpus": 0.5, "num_cpus": 2, **model_options}},
        "encoder": {"num_cpus": 0.25},
        "ingress": {"num_cpus": 0.25},
    }


def app_args(model: str, weights: str, storage: str, max_batch_size: int) -> dict:
    return one_model_app(model, weights, storage, batching={"max_batch_size": max_batch_size})


def fastest(run: CellRun) -> Sample:
    """The least disturbed request: on a shared machine, noise only ever adds time."""
    return min(run.samples, key=lambda sample: sample.timings_s["total"])


def follow_events(http: httpx.Client, job_id: str) -> None:
    """Until the job's stream says it ended (its `done` or `error` event), as flux_client and the CLI wait."""
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as events:
        for line in events.iter_lines():
            if line.startswith("event: ") and line.removeprefix("event: ") in ("done", "error"):
                return


def events_wait_s(base_url: str, key: str, cell: Cell, repeats: int) -> float:
    """The least disturbed of `repeats` submits waited for on the job's events stream until its `done` event,
    after one warm-up: what a user of flux_client or the CLI waits (they follow the stream)."""
    body = {"prompt": PROMPT, "width": cell.width, "height": cell.height, "steps": cell.steps, "seed": SEED}
    body["output_format"] = cell.output_format
    times = []
    with httpx.Client(base_url=base_url, headers={"x-key": key}, timeout=600) as http:
        for _ in range(repeats + 1):
            started = time.perf_counter()
            follow_events(http, http.post(f"/v1/{cell.variant}", json=body).raise_for_status().json()["id"])
            times.append(time.perf_counter() - started)
    return min(times[1:])


def images_per_s(run: CellRun) -> float:
    return len(run.samples) * run.cell.batch_size / run.wall_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[bench_arguments()]
    )
    args = parser.parse_args()

    in_process = InProcessRunner(args.weights, args.device)
    steps = in_process.model_facts(args.model).defaults.steps
    # the API's default output format, as a client that asks for nothing else gets
    one = Cell(args.model, steps, batch_size=1, width=args.size, height=args.size, output_format="jpeg")
    in_process_s = fastest(in_process.run(one, [PROMPT] * args.repeats)).timings_s["total"]
    del in_process  # its models leave before the replicas load theirs

    import ray
    from ray import serve

    from serve_apps.builder import build_app

    key = secrets.token_urlsafe(16)
    os.environ["FLUX_API_KEYS"] = key
    storage = tempfile.mkdtemp(prefix="flux-bench-")
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})

    def deploy(max_batch_size: int) -> None:
        serve.run(build_app(app_args(args.model, args.weights, storage, max_batch_size)), name="flux", route_prefix="/")

    service = HttpRunner(f"http://127.0.0.1:{PORT}", key, fetch_images=False)
    concurrent = replace(one, concurrency=CONCURRENT_REQUESTS)
    deploy(CONCURRENT_REQUESTS)
    served = fastest(service.run(one, [PROMPT] * args.repeats))
    streamed_s = events_wait_s(f"http://127.0.0.1:{PORT}", key, one, args.repeats)
    batched_ips = images_per_s(service.run(concurrent, [PROMPT]))
    deploy(1)
    unbatched_ips = images_per_s(service.run(concurrent, [PROMPT]))
    serve.shutdown()
    ray.shutdown()

    served_s = served.timings_s["total"]
    print(f"model {args.model}, weights {args.weights}, {args.size}x{args.size}, {steps} steps, best of {args.repeats}")
    print("| measurement | value | ratio |")
    print("|---|---|---|")
    print(f"| one request, in-process workers | {in_process_s:.2f} s | 1.00 |")
    print(
        f"| one request, through the service (HTTP submit + poll every 20 ms) | {served_s:.2f} s | {served_s / in_process_s:.2f}x |"
    )
    print(
        f"| one request, through the service (submit + events stream, as flux_client waits) | {streamed_s:.2f} s "
        f"| {streamed_s / in_process_s:.2f}x |"
    )
    spent = ", ".join(f"{stage} {served.timings_s[stage]:.2f} s" for stage in STAGES)
    print(f"| where the served request's time went | {spent} | |")
    concurrent_rows = f"| {CONCURRENT_REQUESTS} concurrent requests, batching"
    print(f"{concurrent_rows} off (max_batch_size 1) | {unbatched_ips:.2f} images/s | 1.00 |")
    print(
        f"{concurrent_rows} on (max_batch_size {CONCURRENT_REQUESTS}) | {batched_ips:.2f} images/s "
        f"| {batched_ips / unbatched_ips:.2f}x |"
    )


if __name__ == "__main__":
    main()
