"""A job's life as Server-Sent Events, read from the database and the live channel, so any ingress
replica can serve it.

The job is read (as `GET /v1/jobs/{id}` shows it), what changed is sent, then the reader waits on the live
channel until the job's live state changes (a progress, a cancel, its end) or REREAD_S passes (what only
the database knows: a queue position, a stage, an adoption), and reads it again; it never sleeps in a
poll loop; the streams of one job on a replica share that reader (api/job_pollers.py). A stream sends
only changes: `queued` {queue_position}, `progress` {step, total, eta_s, and `preview` {step, image (a data URL)}
when the picture is new to this stream}, then one `done` (Ready) or
`error` (Error, Cancelled, Request Moderated) carrying the whole job, and ends. Each event's
id is derived from the job's state, not counted per connection, so a client that reconnects with
`Last-Event-ID` (after an ingress restart, say) gets only what it has not seen. Keep-alive comments are
FastAPI's (every 15 s while nothing is sent). A stream lives at most `max_life_s` (limits.stream_max_life_s),
then ends without a final event: the client's reconnect passes the key (or signed URL) check again, so a
revoked key or an expired URL is not followed forever.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from serve_apps.api.job_pollers import JobPollers, ReadJob, WaitForChange
from serve_apps.api.protocol import JobStatus

REREAD_S = 0.5  # the longest a job's poller waits for the live channel before it reads the database again
# An event id is attempts * ATTEMPT_SPAN + a rank inside the attempt: queue positions first
# (nearer the front ranks higher), then denoising steps, then the end. A retried job starts
# a new span, so its ids stay above everything the first attempt sent.
QUEUE_RANKS = 1_000
ATTEMPT_SPAN = 100_000
FINAL_RANK = ATTEMPT_SPAN - 1

DONE = "done"
ERROR = "error"
QUEUED = "queued"
PROGRESS = "progress"


@dataclass(frozen=True)
class JobEvent:
    name: str
    id: int
    data: dict


def parse_last_event_id(value: str | None) -> int:
    """The id a reconnecting client last saw (the `Last-Event-ID` header); 0 when absent or not ours."""
    try:
        return max(0, int(value)) if value else 0
    except ValueError:
        return 0


def state_event(job: dict) -> JobEvent | None:
    """The event that describes the job's state now, or None while there is nothing to report."""
    base = job.get("attempts", 0) * ATTEMPT_SPAN
    if job["status"] != JobStatus.PENDING.value:
        name = DONE if job["status"] == JobStatus.READY.value else ERROR
        return JobEvent(name, base + FINAL_RANK, job)
    position = job.get("queue_position")
    if position is not None:
        rank = QUEUE_RANKS - min(position, QUEUE_RANKS - 1)
        return JobEvent(QUEUED, base + rank, {"queue_position": position})
    progress = job.get("progress")
    if progress:
        step = min(progress["step"], FINAL_RANK - QUEUE_RANKS - 1)
        data = {"step": progress["step"], "total": progress["total"], "eta_s": progress.get("eta_s")}
        if job.get("preview"):
            data["preview"] = job["preview"]
        return JobEvent(PROGRESS, base + QUEUE_RANKS + step, data)
    return None


def without_seen_preview(event: JobEvent, last_preview: dict | None) -> tuple[JobEvent, dict | None]:
    """A progress event without its picture when the stream already sent that one; and the latest sent."""
    if event.data["preview"] != last_preview:
        return event, event.data["preview"]
    return JobEvent(event.name, event.id, {k: v for k, v in event.data.items() if k != "preview"}), last_preview


async def job_events(
    read_job: ReadJob,
    wait_for_change: WaitForChange,
    last_event_id: int = 0,
    max_life_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    job_id: str = "",
    pollers: JobPollers | None = None,
) -> AsyncIterator[JobEvent]:
    """Events for one job until it ends (or disappears, or `max_life_s` passes), skipping ids up to
    `last_event_id`.

    `read_job()` returns the job's JSON as `GET /v1/jobs/{id}` shows it (None once it is gone).
    `wait_for_change(version)` returns the job's live version once it is above `version`, or after a
    while with whatever it is. Streams of one `job_id` given the same `pollers` (the replica's) share one
    poller, so one read serves them all; without `pollers` the stream polls for itself. Ids only grow within
    a stream: a state ranked at or below the last id sent is not sent.
    """
    last_sent = last_event_id
    last_preview = None  # a picture is sent once per stream: later progress events leave it out
    ends_at = None if max_life_s is None else clock() + max_life_s
    with (pollers or JobPollers()).subscribe(job_id, read_job, wait_for_change) as states:
        while ends_at is None or clock() < ends_at:
            job = await states.next_state()
            if job is None:
                return
            event = state_event(job)
            if event is not None and event.id > last_sent:
                last_sent = event.id
                if event.name == PROGRESS and "preview" in event.data:
                    event, last_preview = without_seen_preview(event, last_preview)
                yield event
            if event is not None and event.name in (DONE, ERROR):
                return
