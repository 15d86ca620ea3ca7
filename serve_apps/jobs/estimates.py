"""ETAs of a served model's jobs, at submit and while Pending, and the deadline check at submit.

What they are made of: the model's running figures (serve_apps/jobs/pace.py, from its last Ready jobs, recomputed
at most every `PACE_TTL_S` per replica), its unfinished jobs in submit order (the database's, so every replica
counts the same queue), the live progress of those handed to the denoiser (which ones run now, and what they have
left), and the replicas serving it (Ray Serve's count, re-read at most every `REPLICAS_TTL_S`). The arithmetic is
serve_apps/jobs/eta.py's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from deployments.contracts import GenerationParams
from deployments.progress import Progress
from serve_apps.config import AppArgs, denoiser_deployment_name
from serve_apps.jobs.deadlines import DeadlineUnmet
from serve_apps.jobs.eta import JobWork, Queue, Running, Serving, job_work, ready_in_s, what_fits
from serve_apps.jobs.pace import PACE_WINDOW, Pace, learn_pace, prior_pace
from serve_apps.jobs.records import JobRecord, Stage
from serve_apps.store.job_stats import JobStats

logger = logging.getLogger("flux_serve.eta")

PACE_TTL_S = 5.0
REPLICAS_TTL_S = 10.0
QUEUE_TTL_S = 1.0
QUEUE_READ_LIMIT = 200  # unfinished jobs read per estimate; those past it count at the mean of those read
DEFAULT_STEP_S_PER_MP = 1.0  # a model the price table has no figure for: a conservative second per megapixel-step

ProgressReader = Callable[[str], Awaitable[Progress | None]]


def running_replicas() -> dict[str, int]:
    """Running replicas per deployment, as Ray Serve counts them; {} outside a Serve application."""
    import ray

    if not ray.is_initialized():  # serve.status() would start a Ray of its own
        return {}
    from ray import serve

    try:
        status = serve.status()
    except Exception:
        return {}
    return {
        name: int(deployment.replica_states.get("RUNNING", 0))
        for application in status.applications.values()
        for name, deployment in application.deployments.items()
    }


def seconds_left(progress: Progress, work: JobWork, pace: Pace, now: float) -> float:
    """A denoising job's steps still to run, by its live progress (its own measured ETA, aged since it was sent)."""
    if progress.step >= progress.of:
        return 0.0
    if progress.eta_s is not None:
        return max(0.0, progress.eta_s - max(0.0, now - progress.updated_at))
    return (progress.of - progress.step) * pace.step.at(work.images * work.cfg_factor, work.sequence_mp_each)


class EtaEstimator:
    def __init__(
        self,
        stats: JobStats,
        args: AppArgs,
        progress: ProgressReader,
        replicas: Callable[[], dict[str, int]] = running_replicas,
        clock: Callable[[], float] = time.time,
    ):
        """`progress(job_id)` reads a job's live progress; `replicas()` counts running replicas per deployment."""
        self.stats = stats
        self.args = args
        self.progress = progress
        self.replicas = replicas
        self.clock = clock
        self._paces: dict[str, tuple[float, Pace]] = {}
        self._replicas: tuple[float, dict[str, int]] = (float("-inf"), {})
        self._snapshots: dict[str, tuple[float, tuple]] = {}

    def prior(self, model: str) -> Pace:
        """Before any job of the model ended: the price quote's seconds per megapixel-step."""
        return prior_pace(self.args.pricing.gpu_s_per_megapixel_step.get(model, DEFAULT_STEP_S_PER_MP))

    async def pace(self, model: str) -> Pace:
        at, pace = self._paces.get(model, (float("-inf"), None))
        if self.clock() - at < PACE_TTL_S:
            return pace
        records = await asyncio.to_thread(self.stats.recent_ready, model, PACE_WINDOW)
        pace = learn_pace(records, self.prior(model))
        self._paces[model] = (self.clock(), pace)
        return pace

    async def serving(self, model: str) -> Serving:
        at, counts = self._replicas
        if self.clock() - at >= REPLICAS_TTL_S:
            counts = await asyncio.to_thread(self.replicas)
            self._replicas = (self.clock(), counts)
        model_args = self.args.models[model]
        replicas = counts.get(denoiser_deployment_name(model))
        return Serving(
            replicas=max(1, model_args.autoscaling.min_replicas) if replicas is None else replicas,
            requests_per_call=model_args.batching.max_batch_size,
            images_per_pass=model_args.max_images_per_forward,
            pixels_per_pass=model_args.max_pixels_per_forward,
            batch_wait_s=model_args.batching.batch_wait_timeout_s,
            shares_passes=not model_args.deterministic,
        )

    async def snapshot(self, model: str, serving: Serving, fresh: bool) -> tuple[list[JobRecord], int, dict]:
        """The model's unfinished jobs (oldest first), how many more there are, and the live progress of those
        handed to the denoiser. `fresh=False` (polls) may reuse one up to QUEUE_TTL_S old, so many pollers of one
        model cost one read; a submit reads afresh, so a burst's jobs each see the ones before."""
        at, snapshot = self._snapshots.get(model, (float("-inf"), None))
        if not fresh and self.clock() - at < QUEUE_TTL_S:
            return snapshot
        records, unread = await asyncio.to_thread(self.stats.unfinished, model, QUEUE_READ_LIMIT)
        handed = [record for record in records if record.stage == Stage.DENOISING]
        handed = handed[: max(1, serving.replicas) * serving.requests_per_call]  # the oldest are the ones running
        progresses = dict(zip((r.id for r in handed), await asyncio.gather(*(self.progress(r.id) for r in handed))))
        snapshot = (records, unread, progresses)
        self._snapshots[model] = (self.clock(), snapshot)
        return snapshot

    async def queue(self, model: str, before: float | None, pace: Pace, serving: Serving, fresh: bool) -> Queue:
        """The model's unfinished jobs submitted before `before` (None: all): those whose denoising shows live
        progress run now; the rest wait, in submit order."""
        records, unread, progresses = await self.snapshot(model, serving, fresh)
        if before is not None:
            ahead = [record for record in records if record.created_at < before]
            records, unread = ahead, unread if len(ahead) == len(records) else 0
        now, running, handed_waiting, waiting = self.clock(), [], [], []
        for record in records:
            work, progress = job_work(record.params), progresses.get(record.id)
            if progress is not None:
                left_s = seconds_left(progress, work, pace, now)
                running.append(Running(work, left_s, (progress.eta_s, progress.step, progress.of)))
            elif record.stage == Stage.DENOISING:
                handed_waiting.append((work, now - record.created_at))
            else:
                waiting.append((work, now - record.created_at))
        # handed over while no pass runs: their call is forming or starting, and a new job gets there too late to
        # join it; behind a running pass they wait for the next call, as the new job will
        handed = 0 if running else len(handed_waiting)
        ordered = handed_waiting + waiting
        ages_s, own_age_s = [age_s for _, age_s in ordered], 0.0 if before is None else now - before
        return Queue(running, [work for work, _ in ordered], unread, handed, ages_s, own_age_s)

    async def at_submit(self, model: str, params: GenerationParams, deadline_s: float | None) -> float:
        """The ETA of a job about to be stored, behind every unfinished job of its model; DeadlineUnmet (with what
        would fit) when it is over `deadline_s`."""
        pace, serving = await self.pace(model), await self.serving(model)
        queue = await self.queue(model, None, pace, serving, fresh=True)
        work = job_work(params)
        eta_s = ready_in_s(queue, work, pace, serving)
        if deadline_s is not None and eta_s > deadline_s:
            fits = await asyncio.to_thread(what_fits, queue, work, pace, serving, deadline_s)
            asked = {"steps": params.steps, "num_images": params.num_images, "width": params.width}
            raise DeadlineUnmet(model, {**asked, "height": params.height}, eta_s, deadline_s, fits)
        return round(eta_s, 2)

    async def of_job(self, record: JobRecord, progress: Progress | None) -> float | None:
        """A Pending job's ETA now: denoising, from its live progress; else from the queue ahead of it."""
        if record.is_final or not isinstance(record, JobRecord):
            return None
        pace, work = await self.pace(record.model), job_work(record.params)
        if progress is not None:
            left_s = seconds_left(progress, work, pace, self.clock())
            return round(left_s + pace.decode.at(work.images, work.output_mp_each) + pace.overhead_s, 2)
        serving = await self.serving(record.model)
        queue = await self.queue(record.model, record.created_at, pace, serving, fresh=False)
        return round(ready_in_s(queue, work, pace, serving), 2)
