"""What the ETA costs a submit when the queue is deep (issue 28): the estimator's fresh read of the model's
unfinished jobs and its simulation of how the denoiser takes them, with 0 to 1000 jobs queued, for a submit
without a deadline and for one refused by its deadline (the refusal also searches what would fit).

A real SQLite database in a temporary folder, 100 Ready jobs behind the running figures, the pending jobs of mixed
sizes, steps and image counts; no Ray (one replica, the configured batching). The estimator reads at most
QUEUE_READ_LIMIT unfinished jobs and counts the rest at their mean, so the cost should stop growing past it.

    .venv/bin/python -m bench.eta_cost
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time

from deployments.contracts import GenerationParams
from serve_apps.config import AppArgs
from serve_apps.jobs.deadlines import DeadlineUnmet
from serve_apps.jobs.estimates import QUEUE_READ_LIMIT, EtaEstimator
from serve_apps.jobs.records import JobRecord, JobStatus
from serve_apps.store import Database
from serve_apps.store.job_stats import JobStats
from serve_apps.store.storage import new_job_id

MODEL = "flux-2-klein-4b"
SIDES_PX = (256, 512, 768, 1024)


def mixed_params(rng: random.Random) -> GenerationParams:
    side = rng.choice(SIDES_PX)
    steps, images = rng.choice((4, 8, 16)), rng.choice((1, 1, 2, 4))
    return GenerationParams(prompt="p", width=side, height=side, steps=steps, guidance=None, seed=1, num_images=images)


def ready_job(rng: random.Random, created_at: float) -> JobRecord:
    params = mixed_params(rng)
    record = JobRecord(id=new_job_id(), model=MODEL, key_id="k", params=params, created_at=created_at)
    record.status = JobStatus.READY
    denoise_s = params.steps * params.num_images * params.width * params.height / 1024**2
    record.timings_s = {"queue": 0.1, "encode": 0.05, "denoise": denoise_s, "decode": 0.1, "store": 0.01}
    record.batch = {"images": params.num_images, "requests": 1, "node": "n"}
    record.updated_at = created_at + denoise_s + 0.3
    return record


async def submit_s(estimator: EtaEstimator, params: GenerationParams, deadline_s: float | None) -> float:
    """Seconds one submit's ETA takes; with `deadline_s` it must be refused (else the figure times nothing)."""
    started = time.perf_counter()
    try:
        await estimator.at_submit(MODEL, params, deadline_s)
    except DeadlineUnmet:
        return time.perf_counter() - started
    if deadline_s is not None:
        raise RuntimeError(f"a submit with deadline_s {deadline_s} was admitted: the refusal was not timed")
    return time.perf_counter() - started


async def measure(depths: list[int], repeats: int) -> list[tuple[int, float, float]]:
    rng = random.Random(28)
    args = AppArgs(storage_url=tempfile.mkdtemp(prefix="flux-eta-cost-"), models={MODEL: {}})
    db = Database.open(args.database_url)
    for number in range(100):
        db.jobs.create(ready_job(rng, 1000.0 + number))

    async def no_progress(job_id: str) -> None:
        return None

    estimator = EtaEstimator(JobStats(db.engine), args, no_progress, replicas=lambda: {})
    own, queued, rows = mixed_params(rng), 0, []
    for depth in depths:
        while queued < depth:
            db.jobs.create(JobRecord(id=new_job_id(), model=MODEL, key_id="k", params=mixed_params(rng)))
            queued += 1
        plain = [await submit_s(estimator, own, None) for _ in range(repeats)]
        refused = [await submit_s(estimator, own, 0.001) for _ in range(repeats)]
        rows.append((depth, statistics.median(plain), statistics.median(refused)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="0,50,200,1000", help="jobs queued on the model, one row each")
    parser.add_argument("--repeats", type=int, default=20)
    options = parser.parse_args()
    rows = asyncio.run(measure([int(depth) for depth in options.depths.split(",")], options.repeats))
    print(f"{MODEL}, SQLite, one replica; median of {options.repeats} submits; reads at most {QUEUE_READ_LIMIT} jobs")
    print("| jobs queued | ETA at submit ms | refused by its deadline (with what fits) ms |")
    print("|---|---|---|")
    for depth, plain_s, refused_s in rows:
        print(f"| {depth} | {plain_s * 1000:.1f} | {refused_s * 1000:.1f} |")


if __name__ == "__main__":
    main()
