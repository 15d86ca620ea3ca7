"""The job events stream as a pure generator: order, a finished job, reconnect with Last-Event-ID."""

from __future__ import annotations

import asyncio

from serve_apps.api.events import DONE, ERROR, PROGRESS, QUEUED, job_events, parse_last_event_id


def job(status="Pending", stage="queued", queue_position=None, step=None, total=4, attempts=0) -> dict:
    return {
        "id": "0" * 32,
        "status": status,
        "stage": stage,
        "attempts": attempts,
        "queue_position": queue_position,
        "progress": {"step": step, "total": total} if step is not None else None,
    }


LIFE = [
    job(queue_position=2),
    job(queue_position=2),  # unchanged: nothing sent
    job(queue_position=1),
    job(stage="encoding", queue_position=0, attempts=1),
    job(stage="denoising", step=1, attempts=1),
    job(stage="denoising", step=1, attempts=1),
    job(stage="denoising", step=3, attempts=1),
    job(status="Ready", stage="done", step=4, attempts=1),
]


def replay(states: list[dict | None], last_event_id: int = 0) -> tuple[list, list[int]]:
    """Run the stream over a scripted job life; returns the events and the versions it waited after.
    Each wait returns the next version at once, as if the job's live state changed every time."""
    remaining, waits = list(states), []

    async def read_job():
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    async def wait_for_change(version: int) -> int:
        waits.append(version)
        return version + 1

    async def collect():
        return [event async for event in job_events(read_job, wait_for_change, last_event_id)]

    return asyncio.run(collect()), waits


def test_events_follow_the_job_in_order_with_growing_ids_and_only_changes():
    events, waits = replay(LIFE)
    assert [(event.name, event.data.get("queue_position"), event.data.get("step")) for event in events] == [
        (QUEUED, 2, None),
        (QUEUED, 1, None),
        (QUEUED, 0, None),
        (PROGRESS, None, 1),
        (PROGRESS, None, 3),
        (DONE, None, None),
    ]
    assert events[3].data == {"step": 1, "total": 4, "eta_s": None}
    assert events[-1].data == LIFE[-1], "done carries the job exactly as read"
    ids = [event.id for event in events]
    assert ids == sorted(set(ids)), "ids grow strictly"
    assert waits == list(range(len(LIFE) - 1)), (
        "one wait between reads, after the version last seen; none after the end"
    )


def test_a_stream_waits_on_the_live_channel_instead_of_sleeping():
    """A real in-process channel: the stream reads the job again only when the channel says it changed
    (or the wait times out), and the job's end wakes it at once."""
    from deployments.progress import Progress
    from serve_apps.live import InProcessChannel

    channel, job_id, reads = InProcessChannel(), "a" * 32, []
    state = {"job": job(stage="denoising", attempts=1)}

    async def read_job():
        reads.append(state["job"])
        return state["job"]

    async def scenario():
        stream = job_events(read_job, lambda version: channel.wait_for_change(job_id, version, 30.0))
        events = []

        async def collect():
            async for event in stream:
                events.append(event)

        task = asyncio.create_task(collect())
        await asyncio.sleep(0.05)
        assert len(reads) == 1 and events == [], "nothing changed: the stream waits, it does not poll"
        for step in (1, 2):
            state["job"] = job(stage="denoising", step=step, attempts=1)
            await channel.publish(Progress(job_id, step, 4))
            await asyncio.sleep(0.05)
        state["job"] = job(status="Ready", stage="done", attempts=1)
        await channel.finish(job_id)
        await asyncio.wait_for(task, 1.0)
        return events

    events = asyncio.run(scenario())
    assert [(event.name, event.data.get("step")) for event in events] == [(PROGRESS, 1), (PROGRESS, 2), (DONE, None)]
    assert len(reads) == 4 and channel.state.waiting() == 0


def test_a_finished_job_gives_one_event_and_ends():
    for status, name in [("Ready", DONE), ("Error", ERROR), ("Cancelled", ERROR), ("Request Moderated", ERROR)]:
        final = job(status=status, stage="done", attempts=1)
        events, waits = replay([final])
        assert [(event.name, event.data) for event in events] == [(name, final)]
        assert waits == []


def test_a_reconnect_with_last_event_id_repeats_nothing_seen():
    seen, _ = replay(LIFE[:5] + [job(status="Ready", stage="done", attempts=1)])
    last_progress = next(event for event in seen if event.name == PROGRESS)
    again, _ = replay(LIFE[4:], last_event_id=last_progress.id)
    assert [event.name for event in again] == [PROGRESS, DONE]
    assert again[0].data["step"] == 3
    done, _ = replay([LIFE[-1]], last_event_id=seen[-1].id)
    assert done == [], "a client that saw done gets nothing more"


def test_a_retried_job_reports_its_second_attempt_after_the_first():
    life = [
        job(stage="denoising", step=3, attempts=1),
        job(stage="queued", queue_position=0, attempts=2),
        job(stage="denoising", step=1, attempts=2),
        job(status="Error", stage="done", attempts=2),
    ]
    events, _ = replay(life)
    assert [event.name for event in events] == [PROGRESS, QUEUED, PROGRESS, ERROR]


def test_a_job_that_disappears_ends_the_stream_and_bad_last_event_ids_count_as_none():
    events, _ = replay([job(queue_position=0), None])
    assert [event.name for event in events] == [QUEUED]
    assert [parse_last_event_id(value) for value in (None, "", "abc", "-5", "12")] == [0, 0, 0, 0, 12]


def test_a_stream_ends_at_its_max_life_while_the_job_still_runs():
    now = [0.0]

    async def read_job():
        return job(queue_position=3)

    async def wait_for_change(version: int) -> int:
        now[0] += 100.0  # each wait lasts 100 s on this clock
        return version

    async def collect():
        stream = job_events(read_job, wait_for_change, max_life_s=300, clock=lambda: now[0])
        return [event async for event in stream]

    events = asyncio.run(asyncio.wait_for(collect(), timeout=5))
    assert [event.name for event in events] == [QUEUED], "ended at 300 s without a final event: the client reconnects"
    assert now[0] == 300.0
