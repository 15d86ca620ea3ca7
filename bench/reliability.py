"""Reliability figures: ingress memory with many queued jobs, an overload run that must keep every
job it admits, and the failover time when the ingress replica running a job dies.

Starts its own Ray Serve (logical GPUs, the tiny emulated 4B model, batches of one so jobs queue):

    .venv/bin/python -m bench.reliability --jobs 1000 --overload-cap 20

1. Memory: submits `--jobs` slow jobs (512x512, 50 steps) at once under limits.max_queued_jobs =
   --jobs, reads the Ingress replica's RSS (psutil, by its process title) before and after, then
   submits 100 more, which must all get 503 with Retry-After; the queued jobs are then cancelled.
2. Overload: redeploys with limits.max_queued_jobs = --overload-cap, submits 2 x cap quick jobs at
   once, and waits for every admitted one: all must end Ready, the rest must have had 503/429.
3. Failover: one slow job undisturbed, then the same job again with the Ingress killed while it
   denoises: when the service answers again, when the job is adopted (attempt 2), when it is Ready.

With `--attacks` it instead replays the attack table (bench/attacks.py, the adversarial suite's) against
a service that lets loopback through, and prints each attack's answer, time and ingress memory:

    .venv/bin/python -m bench.reliability --attacks
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import tempfile
import time

import httpx
import ray

from bench.attacks import ATTACKS, Target, ingress_rss_bytes, replay, wait_ready
from bench.bombs import BombServer

KEY = "bench-key"
MODEL = "flux-2-klein-4b"
SLOW_JOB = {"prompt": "a red circle on a blue background", "width": 512, "height": 512, "steps": 50}
QUICK_JOB = {"prompt": "a red circle on a blue background", "width": 64, "height": 64}
MEGABYTE = 2**20


def attack_args(storage: str) -> dict:
    """The attacks' service: loopback reachable (the bomb server), image downloads bounded at 3 s."""
    return {
        **app_args(storage, 1000),
        "network": {"allowed_private_hosts": ["127.0.0.1"]},
        "inputs": {"timeout_s": 3},
        "webhooks": {"max_attempts": 1, "timeout_s": 5},
    }


def attacks_run(base_url: str) -> None:
    """Each attack of the table once, with a line per attack; the table's own verdict in the last column."""
    with BombServer() as bombs:
        target = Target(base_url, KEY, bombs)
        with target.client() as http:
            wait_ready(http, http.post(f"/v1/{MODEL}", json=QUICK_JOB).json()["id"])  # imports done
        print(f"{'attack':24} {'status':>6} {'time_s':>7} {'ingress_mb':>10}  right", flush=True)
        for attack in ATTACKS:
            outcome = replay(attack, target)
            answer = outcome.answer
            growth_mb = outcome.ingress_growth_bytes / MEGABYTE
            print(
                f"{attack.name:24} {answer.status:>6} {answer.elapsed_s:7.2f} {growth_mb:+10.1f}  {outcome.right}",
                flush=True,
            )


def app_args(storage: str, max_queued_jobs: int, stale_after_s: float = 30.0) -> dict:
    model = {"weights": "emulated:tiny", "num_gpus": 0.5, "num_cpus": 0.25, "batching": {"max_batch_size": 1}}
    return {
        "storage_url": storage,
        "models": {MODEL: model},
        "encoder": {"num_cpus": 0.25},
        "ingress": {"num_cpus": 0.25},
        "limits": {
            "concurrent_jobs_per_key": 100_000,
            "submits_per_minute_per_key": 100_000,
            "max_queued_jobs": max_queued_jobs,
        },
        "jobs": {"timeout_s": 3600, "stale_after_s": stale_after_s},
    }


async def submit_all(http: httpx.AsyncClient, job: dict, count: int, concurrency: int = 32) -> list[httpx.Response]:
    gate = asyncio.Semaphore(concurrency)

    async def one(number: int) -> httpx.Response:
        async with gate:
            return await http.post(f"/v1/{MODEL}", json={**job, "seed": number})

    return await asyncio.gather(*(one(number) for number in range(count)))


def by_status(responses: list[httpx.Response]) -> dict[int, int]:
    return dict(sorted(collections.Counter(response.status_code for response in responses).items()))


async def memory_run(base_url: str, jobs: int) -> dict:
    async with httpx.AsyncClient(base_url=base_url, headers={"x-key": KEY}, timeout=120) as http:
        await (await http.post(f"/v1/{MODEL}", json=QUICK_JOB)).aclose()  # the Ingress has imported everything
        await asyncio.sleep(2)
        before = ingress_rss_bytes()
        started = time.perf_counter()
        admitted = await submit_all(http, SLOW_JOB, jobs)
        submit_s = time.perf_counter() - started
        await asyncio.sleep(5)
        after = ingress_rss_bytes()
        refused = await submit_all(http, SLOW_JOB, 100)
        ids = [response.json()["id"] for response in admitted if response.status_code == 200]
        statuses = collections.Counter()
        for job_id in ids:
            statuses[(await http.get("/v1/get_result", params={"id": job_id})).json()["status"]] += 1
        for job_id in ids:
            await http.post(f"/v1/jobs/{job_id}/cancel")
    return {
        "submitted": by_status(admitted),
        "submit_s": round(submit_s, 1),
        "ingress_rss_mb": {"before": round(before / MEGABYTE), "with_queue": round(after / MEGABYTE)},
        "per_queued_job_kb": round((after - before) / max(1, len(ids)) / 1024, 1),
        "over_the_cap": by_status(refused),
        "retry_after": refused[0].headers.get("retry-after"),
        "refusal": refused[0].json().get("detail"),
        "queued_statuses": dict(statuses),
    }


async def overload_run(base_url: str, cap: int) -> dict:
    async with httpx.AsyncClient(base_url=base_url, headers={"x-key": KEY}, timeout=120) as http:
        responses = await submit_all(http, QUICK_JOB, 2 * cap, concurrency=2 * cap)
        ids = [response.json()["id"] for response in responses if response.status_code == 200]
        deadline = time.monotonic() + 600
        final: dict[str, str] = {}
        while len(final) < len(ids) and time.monotonic() < deadline:
            for job_id in ids:
                if job_id not in final:
                    status = (await http.get("/v1/get_result", params={"id": job_id})).json()["status"]
                    if status != "Pending":
                        final[job_id] = status
            await asyncio.sleep(0.5)
    return {"submitted": by_status(responses), "admitted_ended": dict(collections.Counter(final.values()))}


def kill_ingress() -> None:
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == "serve" and "#Ingress#" in actor["name"]:
            ray.kill(ray.get_actor(actor["name"], namespace="serve"), no_restart=True)


async def job_state(http: httpx.AsyncClient, job_id: str) -> dict | None:
    try:
        response = await http.get(f"/v1/jobs/{job_id}")
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


async def failover_run(base_url: str) -> dict:
    """Seconds from the kill to: the service answering, the job adopted, the job Ready."""
    async with httpx.AsyncClient(base_url=base_url, headers={"x-key": KEY}, timeout=30) as http:
        timings = {}
        for disturbed in (False, True):
            job_id = (await http.post(f"/v1/{MODEL}", json={**SLOW_JOB, "steps": 30})).json()["id"]
            started = time.perf_counter()
            while not ((await job_state(http, job_id)) or {}).get("progress"):
                await asyncio.sleep(0.05)
            marks = {}
            if disturbed:
                killed = time.perf_counter()
                kill_ingress()
            while True:
                state = await job_state(http, job_id)
                now = time.perf_counter()
                if disturbed and state is not None:
                    marks.setdefault("answering_s", round(now - killed, 1))
                    if state["attempts"] >= 2:
                        marks.setdefault("adopted_s", round(now - killed, 1))
                if state is not None and state["status"] not in ("Pending", "Running"):
                    marks.update(status=state["status"], total_s=round(now - started, 1))
                    break
                await asyncio.sleep(0.1)
            timings["killed" if disturbed else "undisturbed"] = marks
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs queued for the memory reading")
    parser.add_argument("--overload-cap", type=int, default=20, help="limits.max_queued_jobs of the overload run")
    parser.add_argument("--stale-after-s", type=float, default=30.0, help="jobs.stale_after_s of the failover run")
    parser.add_argument("--attacks", action="store_true", help="replay the attack table instead of the three runs")
    options = parser.parse_args()

    from ray import serve

    from serve_apps.builder import build_app

    os.environ["FLUX_API_KEYS"] = KEY
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 18790})
    base_url = "http://127.0.0.1:18790"
    try:
        if options.attacks:
            with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as storage:
                serve.run(build_app(attack_args(storage)), name="flux", route_prefix="/")
                attacks_run(base_url)
            return
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as storage:  # replicas may still write
            serve.run(build_app(app_args(storage, options.jobs)), name="flux", route_prefix="/")
            print("memory:", asyncio.run(memory_run(base_url, options.jobs)), flush=True)
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as storage:  # replicas may still write
            serve.run(build_app(app_args(storage, options.overload_cap)), name="flux", route_prefix="/")
            print("overload:", asyncio.run(overload_run(base_url, options.overload_cap)), flush=True)
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as storage:  # replicas may still write
            serve.run(build_app(app_args(storage, 100, options.stale_after_s)), name="flux", route_prefix="/")
            print(
                f"failover (stale_after_s {options.stale_after_s:g}):", asyncio.run(failover_run(base_url)), flush=True
            )
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
