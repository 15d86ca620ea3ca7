"""The denoiser replica's batch window waits for company only while the replica works: a job that finds it idle
starts at once, jobs that arrive while it works are batched together after it (as a user repeating one
character waits for the model, not for the window)."""

from __future__ import annotations

import asyncio
import time

from deployments.contracts import DenoiseJob, DenoiseOutcome
from serve_apps.config import AppArgs
from serve_apps.live import InProcessChannel
from serve_apps.workers import DenoiserServer

MODEL = "flux-2-klein-4b"
WINDOW_S = 1.0
PASS_S = 0.5


class NoModel:
    """What DenoiserServer builds, without weights: the test replaces the batch's work."""

    def __init__(self, *_args, **_kwargs):
        pass


def server(tmp_path) -> tuple[DenoiserServer, list[list[str]]]:
    args = AppArgs(storage_url=str(tmp_path), models={MODEL: {"weights": "emulated:tiny", "device": "cpu"}})
    replica = DenoiserServer(args, MODEL, denoiser_class=NoModel, channel=InProcessChannel())
    replica.reconfigure({"max_batch_size": 8, "batch_wait_timeout_s": WINDOW_S})
    batches: list[list[str]] = []

    def generate_batch(jobs, on_outcome):
        batches.append([job.job_id for job in jobs])
        time.sleep(PASS_S)
        outcomes = [DenoiseOutcome(images=[], timings_s={}, batch={}) for _ in jobs]
        for index, outcome in enumerate(outcomes):
            on_outcome(index, outcome)
        return outcomes

    replica.generate_batch = generate_batch
    return replica, batches


class Embedding:
    encode_s = 0.0


def job(job_id: str) -> DenoiseJob:
    return DenoiseJob(params=None, prompt=None, job_id=job_id)


def test_a_job_that_finds_the_replica_idle_skips_the_window_and_later_ones_batch_behind_it(tmp_path, monkeypatch):
    # Ray's own batch queue, outside a replica: no replica context to read the model id or a config from
    monkeypatch.setattr("serve_apps.workers.serve.get_multiplexed_model_id", lambda: "")
    monkeypatch.setattr(
        "ray.serve.batching._BatchQueue._warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda _queue: None
    )
    replica, batches = server(tmp_path)

    async def scenario() -> float:
        started = time.perf_counter()
        first = asyncio.create_task(replica.generate(job("a"), Embedding(), None))
        await first
        alone_s = time.perf_counter() - started
        first = asyncio.create_task(replica.generate(job("b"), Embedding(), None))
        await asyncio.sleep(0.15)  # b is running: c and d come while the replica works
        later = [asyncio.create_task(replica.generate(job(name), Embedding(), None)) for name in "cd"]
        await asyncio.gather(first, *later)
        return alone_s

    alone_s = asyncio.run(scenario())
    assert alone_s < WINDOW_S, f"a lone job waited {alone_s:.2f} s: the window ({WINDOW_S} s) is for company"
    assert batches == [["a"], ["b"], ["c", "d"]], batches
