"""Deadlines: a submit whose ETA is over its `deadline_s` is refused at once, saying what would fit; a job admitted
with one that has not started denoising when its deadline passes is cancelled and told so.

Decided: once a job's denoising has started it runs to its end even past its deadline (its GPU work is already
being spent, and the images are what the caller asked for); a queued one is cancelled, since a caller who set a
deadline would rather be told at once than get the images late.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import TypeVar

from serve_apps.jobs.eta import Fits
from serve_apps.jobs.kind import JobCancelled, JobContext
from serve_apps.jobs.records import JobRecord

DEADLINE_PASSED = "deadline passed before it started"

T = TypeVar("T")


class DeadlineUnmet(Exception):
    """The job would be Ready after its deadline: refused (429) before any row is written or GPU work done."""

    def __init__(self, model: str, asked: dict, eta_s: float, deadline_s: float, fits: Fits):
        """`asked`: the job's steps, num_images, width and height."""
        self.model, self.asked, self.eta_s, self.deadline_s, self.fits = model, asked, eta_s, deadline_s, fits
        super().__init__(self.message())

    def suggestions(self) -> dict:
        """What would be Ready within the deadline, each changed alone; absent where nothing would."""
        fits, found = self.fits, {}
        if fits.steps is not None:
            found["steps"] = fits.steps
        if fits.num_images is not None:
            found["num_images"] = fits.num_images
        if fits.side_px is not None:
            found["width"] = found["height"] = fits.side_px
        return found

    def message(self) -> str:
        asked, fits = self.asked, self.fits
        head = (
            f"deadline_s {self.deadline_s:g} cannot be met: this job would be Ready in about {self.eta_s:.1f} s on "
            f"{self.model} (its own work and the work queued ahead of it)."
        )
        options = []
        if fits.steps is not None:
            options.append(f"steps {fits.steps} (asked {asked['steps']})")
        if fits.num_images is not None:
            options.append(f"num_images {fits.num_images} (asked {asked['num_images']})")
        if fits.side_px is not None:
            options.append(f"width and height {fits.side_px} (asked {asked['width']}x{asked['height']})")
        if options:
            return f"{head} What would fit: {'; or '.join(options)}; or a deadline_s above {self.eta_s:.0f}."
        return (
            f"{head} Even the smallest job would take about {fits.smallest_eta_s:.1f} s now: retry later, or set "
            f"deadline_s above {self.eta_s:.0f}."
        )

    def retry_after_s(self) -> int:
        """When the queue ahead may have drained enough for the smallest job to fit."""
        return max(1, round(self.fits.smallest_eta_s))


def deadline_passed(record: JobRecord, now: float) -> bool:
    return record.deadline_s is not None and now >= record.created_at + record.deadline_s


async def unless_queued_past_deadline(record: JobRecord, context: JobContext, work: Coroutine[object, object, T]) -> T:
    """`await work` (the job's encoding and denoising), unless the job's deadline passes before its denoising has
    started (no live progress yet): then it is asked to stop (the worker skips it if it gets there) and ends
    Cancelled with DEADLINE_PASSED. Once started it runs to its end."""
    if record.deadline_s is None:
        return await work
    if deadline_passed(record, time.time()):  # an adopted job, say: it never starts
        work.close()
        raise JobCancelled(DEADLINE_PASSED)
    task = asyncio.ensure_future(work)
    left_s = record.created_at + record.deadline_s - time.time()
    done, _ = await asyncio.wait({task}, timeout=max(0.0, left_s))
    if done or await context.signals.progress(record.id) is not None:
        return await task
    await context.signals.request_cancel(record.id)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise JobCancelled(DEADLINE_PASSED)
