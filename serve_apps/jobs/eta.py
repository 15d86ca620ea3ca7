"""The ETA arithmetic: when a job would be Ready, from the work queued ahead of it on its model and the model's
running figures (serve_apps/jobs/pace.py); and, for a deadline it cannot meet, the largest request that would.

A small simulation of how the denoiser replicas take work (serve_apps/workers.py, deployments/denoiser.py): waiting
jobs leave in submit order, in calls of up to `requests_per_call` (batching.max_batch_size) formed as they arrive
(a call takes the jobs that come within `batch_wait_s` of its first, even while the replica works; jobs already
handed to the denoiser have formed theirs, so a new job never joins them), each to the replica free first; a lone
job that finds its replica idle skips the window. A call runs its passes one after another (jobs sharing size,
steps, guidance, adapters and references share a pass, up to the images and pixels a pass takes, unless the model
is deterministic); each job is done when its own last pass is and its images are stored, the replica free when
the call's last job is. Jobs already denoising hold their replica for what their live progress says is left.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from deployments.contracts import MIN_SIDE_PX, GenerationParams
from deployments.passes import images_per_pass, pack_passes
from serve_apps.jobs.pace import MEGAPIXEL, REFERENCE_AREA_PX, Pace

SQUARE_STEP_PX = 64  # a smaller size that fits is suggested as a square, its side a multiple of this


@dataclass(frozen=True)
class JobWork:
    """What a job asks of a denoiser, as the estimate counts it. `shared`: what else jobs must share to run in
    one pass (guidance, adapters, references, mask)."""

    width: int
    height: int
    steps: int
    images: int
    reference_mp_each: float = 0.0
    cfg_factor: int = 1
    shared: tuple = ()

    @property
    def output_mp_each(self) -> float:
        return self.width * self.height / MEGAPIXEL

    @property
    def sequence_mp_each(self) -> float:
        return self.output_mp_each + self.reference_mp_each

    @property
    def group(self) -> tuple:
        return self.width, self.height, self.steps, self.shared


def job_work(params: GenerationParams) -> JobWork:
    references_px = sum(min(REFERENCE_AREA_PX, ref.width * ref.height) for ref in params.references)
    adapters = tuple(sorted((adapter.id, adapter.scale) for adapter in params.adapters))
    shared = (params.guidance, adapters, tuple(ref.sha256 for ref in params.references), params.mask)
    return JobWork(
        params.width,
        params.height,
        params.steps,
        params.num_images,
        references_px / MEGAPIXEL,
        2 if params.uses_cfg else 1,
        shared,
    )


@dataclass(frozen=True)
class Running:
    """A job denoising now: seconds its pass has left (its live progress), and its pass (the jobs of one share it)."""

    work: JobWork
    left_s: float
    pass_key: tuple


@dataclass(frozen=True)
class Serving:
    """How a model's replicas take work (its deployment's settings). `replicas` 0: scaled to zero;
    `shares_passes` False: a deterministic model gives each job passes of its own."""

    replicas: int
    requests_per_call: int
    images_per_pass: int
    pixels_per_pass: int
    batch_wait_s: float
    shares_passes: bool = True

    def images_in_pass(self, work: JobWork) -> int:
        return images_per_pass(work.width, work.height, self.images_per_pass, self.pixels_per_pass)


@dataclass(frozen=True)
class Queue:
    """A model's unfinished jobs ahead of one: those denoising, those waiting (the first `handed` of them already
    handed to the denoiser, then the rest, each oldest first), and how many more wait past those read (counted at
    the mean of those read). `ages_s`: how long ago each waiting job was submitted (None: all at once), and
    `own_age_s` the job asked about (0: a job being submitted)."""

    running: list[Running] = field(default_factory=list)
    waiting: list[JobWork] = field(default_factory=list)
    unread: int = 0
    handed: int = 0
    ages_s: list[float] | None = None
    own_age_s: float = 0.0


def calls_by_arrival(ages_s: list[float], size: int, window_s: float) -> list[list[int]]:
    """The calls jobs that arrived `ages_s` ago (oldest first) form, as Serve's batch queue forms them: a call takes
    the jobs that arrive within `window_s` of its first, up to `size`; it is formed then, even while the replica
    still works, so a job that comes later waits for a call of its own however long the queue ahead."""
    calls: list[list[int]] = []
    for index, age_s in enumerate(ages_s):
        if calls and len(calls[-1]) < size and ages_s[calls[-1][0]] - age_s <= window_s:
            calls[-1].append(index)
        else:
            calls.append([index])
    return calls


def busy_until(running: list[Running], pace: Pace, replicas: int) -> list[float]:
    """When each replica is free of the passes running now: a pass ends when its slowest job's steps are done and
    its images decoded. Never more busy replicas than there are."""
    passes: dict[tuple, list[Running]] = {}
    for job in running:
        passes.setdefault(job.pass_key, []).append(job)
    ends = sorted(
        (
            max(job.left_s for job in jobs) + sum(pace.decode.at(j.work.images, j.work.output_mp_each) for j in jobs)
            for jobs in passes.values()
        ),
        reverse=True,
    )[:replicas]
    return ends + [0.0] * (replicas - len(ends))


def call_s(call: list[JobWork], pace: Pace, serving: Serving) -> float:
    """Seconds one call of these jobs takes: its passes, grouped and packed as the denoiser plans them."""
    return call_ends(call, pace, serving)[-1]


def call_ends(call: list[JobWork], pace: Pace, serving: Serving) -> list[float]:
    """When each job of one call is done, seconds from the call's start, in call order, then when the call ends:
    passes run one after another as the denoiser plans them (groups in order of their first job, each packed),
    and a job is done when its last pass is and its images stored (stores one after another, beside the next
    pass)."""
    packed = pack_passes(
        [work.group for work in call],
        [work.images for work in call],
        lambda index: serving.images_in_pass(call[index]),
        shared=serving.shares_passes,
    )
    passes = [[index for index, _ in chunk] for chunk in packed]  # the jobs with an image in each pass, in order
    last_pass = {index: number for number, jobs in enumerate(passes) for index in jobs}
    ends, clock_s, stored_s = [0.0] * len(call), 0.0, 0.0
    for number, jobs in enumerate(passes):
        first = call[jobs[0]]
        clock_s += pace.pass_s(len(jobs), first.sequence_mp_each, first.cfg_factor, first.output_mp_each, first.steps)
        for index in dict.fromkeys(jobs):
            if last_pass[index] == number:
                stored_s = max(stored_s, clock_s) + pace.store_s_per_image * call[index].images
                ends[index] = stored_s
    return [*ends, max(clock_s, stored_s)]


def ready_in_s(queue: Queue, own: JobWork, pace: Pace, serving: Serving) -> float:
    """Seconds from now until a job of `own` work, behind `queue`, would be Ready. It is in the last call, which
    cannot start before its prompt is encoded."""
    replicas = max(1, serving.replicas)
    free = busy_until(queue.running, pace, replicas)
    if serving.replicas == 0:
        free = [max(at, pace.cold_start_s) for at in free]
    if queue.unread:
        per_job_s = sum(call_s([work], pace, serving) for work in queue.waiting) / max(1, len(queue.waiting))
        free = [at + queue.unread * per_job_s / replicas for at in free]
    size, jobs = serving.requests_per_call, [*queue.waiting, own]
    ages_s = [*(queue.ages_s if queue.ages_s is not None else [queue.own_age_s] * len(queue.waiting)), queue.own_age_s]
    calls = [  # the handed jobs' calls are formed already: the rest never join them
        [begin + index for index in call]
        for begin, end in ((0, queue.handed), (queue.handed, len(jobs)))
        for call in calls_by_arrival(ages_s[begin:end], size, serving.batch_wait_s)
    ]
    for number, call in enumerate(calls):
        replica = min(range(replicas), key=free.__getitem__)
        start = free[replica] if number < len(calls) - 1 else max(free[replica], pace.encode_s)
        alone_on_an_idle_replica = len(call) == 1 and free[replica] == 0.0
        if len(call) < size and not alone_on_an_idle_replica:  # the window runs from its first job's arrival
            start = max(start, serving.batch_wait_s - ages_s[call[0]])
        *done_at, ends_at = call_ends([jobs[index] for index in call], pace, serving)
        free[replica] = start + ends_at
    return start + done_at[-1] + pace.overhead_s


@dataclass(frozen=True)
class Fits:
    """For a deadline a job cannot meet: the largest steps, image count and square side (each changed alone) that
    would meet it (None: none would), and the ETA of the smallest job, which is what the queue alone costs."""

    steps: int | None
    num_images: int | None
    side_px: int | None
    smallest_eta_s: float


def what_fits(queue: Queue, own: JobWork, pace: Pace, serving: Serving, deadline_s: float) -> Fits:
    def meets(work: JobWork) -> bool:
        return ready_in_s(queue, work, pace, serving) <= deadline_s

    steps = next((s for s in range(own.steps - 1, 0, -1) if meets(replace(own, steps=s))), None)
    images = next((n for n in range(own.images - 1, 0, -1) if meets(replace(own, images=n))), None)
    largest = math.isqrt(own.width * own.height) // SQUARE_STEP_PX * SQUARE_STEP_PX
    if largest * largest >= own.width * own.height:
        largest -= SQUARE_STEP_PX
    sides = range(largest, MIN_SIDE_PX - 1, -SQUARE_STEP_PX)
    side = next((s for s in sides if meets(replace(own, width=s, height=s))), None)
    smallest = replace(own, steps=1, images=1, width=MIN_SIDE_PX, height=MIN_SIDE_PX)
    return Fits(steps, images, side, ready_in_s(queue, smallest, pace, serving))
