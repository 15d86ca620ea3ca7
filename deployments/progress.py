"""The step hook's contract: what a loop (denoising or training) reports at each step, and how it learns to stop.

Torch-free, so the ingress, the workers and the trainers share one typed `Progress` and one
`StepObserver` port; where progress travels (a live channel, the database) is the observer's business.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Protocol


@dataclass(frozen=True)
class Progress:
    """One job's place in its loop: `step` of `of` done, an ETA when one can be given, and a small
    preview image (PNG or JPEG bytes) when the loop makes one."""

    job_id: str
    step: int
    of: int
    eta_s: float | None = None
    preview: bytes | None = None
    updated_at: float = 0.0
    preview_step: int | None = None  # the step `preview` was drawn at

    def to_json(self) -> dict:
        """As progress appears in `GET /v1/jobs/{id}` and events (the preview travels apart, by URL)."""
        return {"step": self.step, "total": self.of, "eta_s": self.eta_s, "updated_at": self.updated_at}


class StepObserver(Protocol):
    """What a loop calls once per step: it publishes progress and answers whether the job should stop."""

    def on_step(self, progress: Progress) -> None: ...

    def cancel_requested(self, job_id: str) -> bool: ...


class Cancelled(Exception):
    """Raised inside a loop at a step where every job it runs was asked to stop."""


class StepClock:
    """Where each request of one call stands across its forward passes, and how fast steps go.

    `passes` lists, in run order, each pass's step count and the requests in it. A request split over
    several passes reports its steps over all of them (step 5 of 8 in the second of two 4-step passes);
    its ETA counts every step still to run until its last pass ends, at the seconds per step measured
    so far in this call.
    """

    def __init__(self, passes: list[tuple[int, tuple[int, ...]]], clock=time.perf_counter):
        self.pass_steps = [steps for steps, _requests in passes]
        self.passes_of: dict[int, list[int]] = {}
        for index, (_steps, requests) in enumerate(passes):
            for request in requests:
                self.passes_of.setdefault(request, []).append(index)
        self.clock = clock
        self.steps_done = 0
        self.step_seconds = 0.0
        self._pass_started = 0.0

    def start_pass(self) -> None:
        self._pass_started = self.clock()

    def step_done(self) -> None:
        now = self.clock()
        self.step_seconds += now - self._pass_started
        self._pass_started = now
        self.steps_done += 1

    def progress(self, job_id: str, request: int, pass_index: int, step: int) -> Progress:
        """`step` steps of pass `pass_index` are done; what that means for this request."""
        passes = self.passes_of[request]
        steps = self.pass_steps[pass_index]
        done = passes.index(pass_index) * steps + step
        left = sum(self.pass_steps[index] for index in range(pass_index, passes[-1] + 1)) - step
        eta_s = left * self.step_seconds / self.steps_done if self.steps_done else None
        return Progress(job_id, done, steps * len(passes), eta_s, None, time.time())


class StepHook:
    """diffusers' `callback_on_step_end` for one forward pass: progress of each request to the observer,
    then `Cancelled` once every request of the pass is asked to stop (the others keep it running)."""

    def __init__(self, clock: StepClock, pass_index: int, jobs: dict[int, str], observer: StepObserver | None):
        """`jobs` maps each request index of the pass to its job id."""
        self.clock = clock
        self.pass_index = pass_index
        self.jobs = jobs
        self.observer = observer
        self.previews = None
        self.latest_previews: dict[int, tuple[int, bytes]] = {}  # request -> (its step, JPEG): sent at each step

    def start(self, previews=None) -> None:
        """Called just before the pipeline's loop: the pass's first step is timed from here. `previews` (see
        deployments.previews.PassPreviews) draws pictures of the images as they form: {request: (pass step, JPEG)}."""
        self.previews = previews
        if previews is not None:
            previews.start()
        self.clock.start_pass()

    def __call__(self, pipeline, step: int, _timestep, callback_kwargs: dict) -> dict:
        self.clock.step_done()
        if self.observer is None:
            return callback_kwargs
        if self.previews is not None:
            self.latest_previews.update(self.previews(pipeline, step, callback_kwargs.get("latents")))
        for request, job_id in self.jobs.items():
            progress = self.clock.progress(job_id, request, self.pass_index, step + 1)
            if request in self.latest_previews:
                preview_step, preview = self.latest_previews[request]
                drawn_at = self.clock.progress(job_id, request, self.pass_index, preview_step + 1).step
                progress = replace(progress, preview=preview, preview_step=drawn_at)
            self.observer.on_step(progress)
        if all(self.observer.cancel_requested(job_id) for job_id in self.jobs.values()):
            raise Cancelled()
        return callback_kwargs
