"""What a repeated reference costs through the service: 20 jobs with the same photos, the caches on and off.

The same 4 photo-like JPEG references go inline with every job (one character, job after job), as a BFL client
sends them, and each job is waited for on its events stream, as flux_client waits: submit to Ready, over HTTP.
On: the ingress finds the bytes decoded (inputs.decoded_cache_bytes) and the denoiser finds them prepared
(models.<m>.reference_cache_bytes). Off: both set to 0, so each job decodes, checks, re-encodes, preprocesses and
VAE-encodes its references again, as before issue 28 (the denoiser's last 16 decoded images are kept either way).
Its own Ray Serve, deployed with the caches on, then off, then on and off again (10 jobs each), so a machine's
load drifting over the run weighs on both sides alike.

    python -m bench.reference_cache_served                 # tiny emulated model, CPU, 512x512, 4 steps
    python -m bench.reference_cache_served --model flux-2-klein-9b-kv  # it keeps the references' keys and values too
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import secrets
import statistics
import tempfile
import time

import httpx
import numpy as np
from PIL import Image

from bench.serve_overhead import follow_events, one_model_app

MODEL = "flux-2-klein-4b"
PORT = 8127
PROMPT = "the same character, in the rain"


def photo_jpeg(seed: int, size: int) -> bytes:
    """A photo-like image: smooth colour fields with grain, the kind a JPEG holds (not a flat colour)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    fields = [np.sin(2 * np.pi * (a * x + b * y) + c) for a, b, c in rng.uniform(0.5, 3, (3, 3))]
    pixels = np.stack(fields, axis=-1) * 90 + 128 + rng.normal(0, 12, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def app_args(model: str, weights: str, storage: str, cached: bool) -> dict:
    app = one_model_app(model, weights, storage, reference_cache_bytes=512 * 2**20 if cached else 0)
    return {**app, "inputs": {"decoded_cache_bytes": 64 * 2**20 if cached else 0}}


def waited_job(http: httpx.Client, model: str, body: dict) -> tuple[float, dict]:
    """Seconds from submit to the job's done event on its stream, and the job as it ended."""
    started = time.perf_counter()
    job_id = http.post(f"/v1/{model}", json=body).raise_for_status().json()["id"]
    follow_events(http, job_id)
    waited_s = time.perf_counter() - started
    job = http.get(f"/v1/jobs/{job_id}").json()
    if job["status"] != "Ready":
        raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
    return waited_s, job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL, help="variant name (flux-2-klein-9b-kv keeps keys and values too)")
    parser.add_argument("--weights", default="emulated:tiny")
    parser.add_argument("--size", type=int, default=512, help="output and reference side, pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--references", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=10, help="jobs per deployment; each side is deployed twice")
    args = parser.parse_args()

    import ray
    from ray import serve

    from serve_apps.builder import build_app

    key = secrets.token_urlsafe(16)
    os.environ["FLUX_API_KEYS"] = key
    storage = tempfile.mkdtemp(prefix="flux-bench-refs-")
    fields = ["input_image"] + [f"input_image_{n}" for n in range(2, args.references + 1)]
    images = {name: base64.b64encode(photo_jpeg(n, args.size)).decode() for n, name in enumerate(fields)}
    runs: dict[str, list[tuple[float, dict]]] = {"on": [], "off": []}
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", headers={"x-key": key}, timeout=600) as http:
            for side in ("on", "off", "on", "off"):
                serve.run(
                    build_app(app_args(args.model, args.weights, storage, side == "on")), name="flux", route_prefix="/"
                )
                warm = {"prompt": "warm-up", "width": args.size, "height": args.size, "steps": args.steps}
                waited_job(http, args.model, warm)  # the replicas' first-call costs, before anything is timed
                for number in range(args.jobs):
                    body = {**warm, "prompt": PROMPT, "seed": len(runs[side]) + number, **images}
                    runs[side].append(waited_job(http, args.model, body))
    finally:
        serve.shutdown()
        ray.shutdown()

    print(
        f"{args.model} {args.weights}, {args.size}x{args.size}, {args.steps} steps, {args.references} inline JPEG "
        f"references, {2 * args.jobs} jobs a side (two deployments each), submit to Ready on the events stream"
    )
    print("| caches | jobs | hits | reference_prepare s (median) | submit to Ready s (median) | total s |")
    print("|---|---|---|---|---|---|")
    for side, jobs in runs.items():
        hits = sum(job["cache"].get("references") == "hit" for _, job in jobs)
        prepare = statistics.median(job["timings_s"].get("reference_prepare", 0.0) for _, job in jobs)
        print(
            f"| {side} | {len(jobs)} | {hits} | {prepare:.3f} | {statistics.median(s for s, _ in jobs):.2f} "
            f"| {sum(s for s, _ in jobs):.1f} |"
        )
    on_s, off_s = (statistics.median(s for s, _ in runs[side]) for side in ("on", "off"))
    print(f"\nsubmit to Ready, on vs off (medians): x{on_s / off_s:.2f}")


if __name__ == "__main__":
    main()
