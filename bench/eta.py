"""How right the submit's eta_s is (issue 28): a mixed load against the served app, each job's ETA against its
real time to Ready.

Starts its own Ray Serve (logical GPUs, the tiny emulated 4B model, one denoiser replica, batches of up to 8),
runs `--warmup` jobs one by one so the running figures have something to learn from, then submits `--jobs` jobs of
mixed sizes, steps and image counts in bursts (a few at once, a random pause between bursts). For each job:
|eta_s at submit - (updated_at - created_at of the Ready job)| / that time. Prints every job, then the median and
90th percentile of the relative error (goal: p90 <= 25 %), and the same for deadlines: jobs submitted with
deadline_s = 1.3 x their ETA that were refused, and how many admitted ones missed theirs.

    .venv/bin/python -m bench.eta --jobs 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time

import httpx

KEY = "bench-eta-key"
MODEL = "flux-2-klein-4b"
PORT = 18791
SIDES_PX = (256, 512, 768, 1024)
STEPS = (4, 8, 16)
IMAGES = (1, 1, 2, 4)
LONG_S = 3.0  # jobs shorter than this are reported apart: a few tenths of a second of jitter is a third of them


def app_args(storage: str) -> dict:
    model = {
        "weights": "emulated:tiny",
        "num_gpus": 0.5,
        "num_cpus": 0.5,
        "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05},
        "autoscaling": {"min_replicas": 1, "max_replicas": 1},
    }
    return {
        "storage_url": storage,
        "models": {MODEL: model},
        "encoder": {"num_cpus": 0.25},
        "ingress": {"num_cpus": 0.25},
        "limits": {"concurrent_jobs_per_key": 1000, "submits_per_minute_per_key": 10_000},
        "jobs": {"timeout_s": 3600},
    }


def random_job(rng: random.Random, number: int) -> dict:
    side = rng.choice(SIDES_PX)
    return {
        "prompt": f"a red circle on a blue background, number {number}",
        "width": side,
        "height": side,
        "steps": rng.choice(STEPS),
        "num_images": rng.choice(IMAGES),
        "seed": number,
    }


async def until_ended(http: httpx.AsyncClient, job_id: str, timeout_s: float = 1800) -> dict:
    """Polls get_result each second (light: no ETA to compute), then reads the job whole."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await http.get("/v1/get_result", params={"id": job_id})).json()["status"] != "Pending":
            return (await http.get(f"/v1/jobs/{job_id}")).json()
        await asyncio.sleep(1.0)
    raise TimeoutError(f"job {job_id} still Pending after {timeout_s} s")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def load(base_url: str, jobs: int, warmup: int, seed: int) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base_url, headers={"x-key": KEY}, timeout=120) as http:
        for number in range(warmup):  # one by one, every size: the figures learn the fixed part and the slope
            side = SIDES_PX[number % len(SIDES_PX)]
            job = {"prompt": "warm-up", "width": side, "height": side, "steps": 4, "num_images": 1 + number % 2}
            await until_ended(http, (await http.post(f"/v1/{MODEL}", json=job)).json()["id"])
        await asyncio.sleep(6)  # the running figures are recomputed at most every 5 s
        submitted: list[tuple[dict, dict]] = []
        number = 0
        while number < jobs:
            burst = [random_job(rng, number + offset) for offset in range(min(rng.randint(1, 8), jobs - number))]
            number += len(burst)
            for body in burst:  # one after another, as a client sends a burst: each ETA sees the ones before
                answer = (await http.post(f"/v1/{MODEL}", json=body)).json()
                submitted.append((body, answer))
            await asyncio.sleep(rng.uniform(0.0, 4.0))
        ended = await asyncio.gather(*(until_ended(http, answer["id"]) for _, answer in submitted))
        deadline_runs = await deadlines(http, rng)
    errors = []
    print(f"{'job':>4} {'size':>7} {'steps':>5} {'n':>2} {'eta_s':>7} {'actual_s':>8} {'error':>7}")
    for index, ((body, answer), job) in enumerate(zip(submitted, ended)):
        actual_s = job["updated_at"] - job["created_at"]
        error = abs(answer["eta_s"] - actual_s) / actual_s
        errors.append(error)
        size = f"{body['width']}x{body['height']}"
        print(
            f"{index:>4} {size:>7} {body['steps']:>5} {body['num_images']:>2} {answer['eta_s']:>7.2f} "
            f"{actual_s:>8.2f} {error:>7.1%}  {job['status']}"
        )
    print(
        f"\n{len(errors)} jobs: |eta_s - actual| / actual median {statistics.median(errors):.1%}, "
        f"p90 {percentile(errors, 0.9):.1%}, max {max(errors):.1%}"
    )
    actuals = [job["updated_at"] - job["created_at"] for job in ended]
    typical_s = statistics.median(actuals)  # the trivial baseline: every job told the run's median time, known after
    told_typical = [abs(typical_s - actual_s) / actual_s for actual_s in actuals]
    print(
        f"baseline, every job told the run's median time ({typical_s:.1f} s): median {statistics.median(told_typical):.1%}, "
        f"p90 {percentile(told_typical, 0.9):.1%}"
    )
    for name, chosen in (("under", lambda actual_s: actual_s < LONG_S), ("of at least", lambda a: a >= LONG_S)):
        part = [error for error, job in zip(errors, ended) if chosen(job["updated_at"] - job["created_at"])]
        if part:
            print(
                f"{len(part)} jobs {name} {LONG_S:.0f} s: median {statistics.median(part):.1%}, "
                f"p90 {percentile(part, 0.9):.1%}, max {max(part):.1%}"
            )
    print(deadline_runs)


async def deadlines(http: httpx.AsyncClient, rng: random.Random, count: int = 10) -> str:
    """Jobs one after another, each with deadline_s = 1.3 x the ETA a probe of the same job was given (a probe
    with deadline_s 0.001: refused, its ETA in the answer, no job made): how many are refused, and whether the
    admitted ones are Ready in time."""
    refused, admitted, late = 0, [], 0
    for number in range(count):
        body = random_job(rng, 1000 + number)
        probe = (await http.post(f"/v1/{MODEL}", json={**body, "deadline_s": 0.001})).json()
        response = await http.post(f"/v1/{MODEL}", json={**body, "deadline_s": round(1.3 * probe["eta_s"], 2)})
        if response.status_code == 429:
            refused += 1
        else:
            admitted.append((response.json()["id"], 1.3 * probe["eta_s"]))
    for job_id, deadline_s in admitted:
        job = await until_ended(http, job_id)
        late += job["status"] == "Ready" and job["updated_at"] - job["created_at"] > deadline_s
    return f"deadlines at 1.3 x the ETA: {refused} of {count} refused, {late} of {len(admitted)} admitted Ready late"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--seed", type=int, default=28)
    options = parser.parse_args()

    import ray
    from ray import serve

    from serve_apps.builder import build_app

    os.environ["FLUX_API_KEYS"] = KEY
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    try:
        serve.run(build_app(app_args(tempfile.mkdtemp(prefix="flux-eta-"))), name="flux", route_prefix="/")
        asyncio.run(load(f"http://127.0.0.1:{PORT}", options.jobs, options.warmup, options.seed))
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
