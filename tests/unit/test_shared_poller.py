"""Event streams of one job on an ingress replica share one poller: one read per change for all of them (no Ray)."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from types import SimpleNamespace

import httpx
from fastapi import FastAPI

from serve_apps.api.events import DONE, PROGRESS, QUEUED, job_events
from serve_apps.api.job_pollers import JobPollers, PollFailed
from serve_apps.api.routers import events as events_router
from serve_apps.config import LimitArgs
from serve_apps.security.auth import ApiKeys, hash_key
from serve_apps.security.signing import UrlSigner

JOB_ID = "a" * 32
KEY = "stream-key"
STREAMS = 20


def job(status="Pending", queue_position=None, step=None, attempts=1) -> dict:
    progress = {"step": step, "total": 4} if step is not None else None
    return {"status": status, "attempts": attempts, "queue_position": queue_position, "progress": progress}


LIFE = [
    job(queue_position=2, attempts=0),
    job(queue_position=1, attempts=0),
    job(queue_position=0),
    job(step=1),
    job(step=2),
    job(step=4),
    job(status="Ready", step=4),
]
EXPECTED = [(QUEUED, 2), (QUEUED, 1), (QUEUED, 0), (PROGRESS, 1), (PROGRESS, 2), (PROGRESS, 4), (DONE, None)]


class ScriptedJob:
    """A job whose life the test moves on (`advance`), with a live version that says when it changed; counts reads."""

    def __init__(self, life: list[dict]):
        self.life = life
        self.version = 0
        self.reads = 0

    async def read(self) -> dict:
        self.reads += 1
        return self.life[min(self.version, len(self.life) - 1)]

    async def wait_for_change(self, version: int) -> int:
        while self.version <= version:
            await asyncio.sleep(0.002)
        return self.version

    def advance(self) -> None:
        self.version += 1


def seen(events) -> list[tuple]:
    return [(event.name, event.data.get("queue_position", event.data.get("step"))) for event in events]


async def follow(scripted: ScriptedJob, pollers: JobPollers | None, received: list, stop_after: int | None = None):
    """A stream of the job, as the router runs it; leaves after `stop_after` events if given."""
    events = job_events(scripted.read, scripted.wait_for_change, job_id=JOB_ID, pollers=pollers)
    async with aclosing(events):
        async for event in events:
            received.append(event)
            if stop_after is not None and len(received) >= stop_after:
                return


async def eventually(condition, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the condition never held"
        await asyncio.sleep(0.002)


async def play(scripted: ScriptedJob, subscribed, taken=lambda version: True, pace_s: float = 0.0) -> None:
    """Move the job through its life once `subscribed()`, each state once `taken(version)` by every stream."""
    await eventually(subscribed)
    for _ in scripted.life[1:]:
        await eventually(lambda: taken(scripted.version))
        await asyncio.sleep(pace_s)
        scripted.advance()


def test_twenty_streams_of_one_job_read_it_as_often_as_one_and_each_gets_every_event_in_order():
    async def run(streams: int) -> tuple[int, list[list]]:
        scripted, pollers = ScriptedJob(LIFE), JobPollers()
        received = [[] for _ in range(streams)]
        followers = [asyncio.create_task(follow(scripted, pollers, mine)) for mine in received]

        def subscribed() -> bool:
            poller = pollers.polling.get(JOB_ID)
            return poller is not None and len(poller.subscriptions) == streams

        def taken(version: int) -> bool:
            return all(len(mine) == version + 1 for mine in received)

        await asyncio.wait_for(asyncio.gather(play(scripted, subscribed, taken), *followers), timeout=10)
        assert pollers.polling == {}, "the job ended: its poller is gone"
        return scripted.reads, received

    alone_reads, (alone,) = asyncio.run(run(1))
    shared_reads, received = asyncio.run(run(STREAMS))
    assert seen(alone) == EXPECTED
    assert all(seen(events) == EXPECTED for events in received), "every stream gets every event, in order"
    assert all([event.id for event in events] == [event.id for event in alone] for events in received)
    assert alone_reads == len(LIFE)
    assert shared_reads <= alone_reads + 1, (
        f"{STREAMS} streams made {shared_reads} reads; one stream makes {alone_reads}"
    )


def test_a_stream_that_leaves_does_not_stop_the_others_and_the_last_to_leave_stops_the_poller():
    running = [job(queue_position=position) for position in range(50, 0, -1)]  # a job that outlives the test

    async def scenario():
        scripted, pollers = ScriptedJob(running), JobPollers()
        leaving, staying, last = [], [], []
        leaver = asyncio.create_task(follow(scripted, pollers, leaving, stop_after=2))
        stayer = asyncio.create_task(follow(scripted, pollers, staying, stop_after=6))
        other = asyncio.create_task(follow(scripted, pollers, last))
        await eventually(lambda: len(last) == 1)
        poller = pollers.polling[JOB_ID]
        for _ in range(5):
            scripted.advance()
            await eventually(lambda: len(last) == scripted.version + 1)
        await asyncio.wait_for(asyncio.gather(leaver, stayer), timeout=5)
        assert len(leaving) == 2 and len(staying) == 6
        assert pollers.polling[JOB_ID] is poller and not poller.task.done(), "one stream is left: the poller goes on"
        scripted.advance()
        await eventually(lambda: len(last) == 7)  # the stream left alone still gets every change
        other.cancel()  # the client goes away
        await asyncio.gather(other, return_exceptions=True)
        assert pollers.polling == {}, "the last stream left: the registry forgets the poller at once"
        await eventually(poller.task.done)
        assert poller.task.cancelled()
        reads = scripted.reads
        scripted.advance()
        await asyncio.sleep(0.05)
        assert scripted.reads == reads, "nobody listens: nothing reads the job"
        return [event.data["queue_position"] for event in last]

    positions = asyncio.run(scenario())
    assert positions == list(range(50, 43, -1))


def test_a_stream_that_joins_late_starts_from_the_latest_state_without_a_read_of_its_own():
    async def scenario():
        scripted, pollers = ScriptedJob(LIFE), JobPollers()
        early, late = [], []
        first = asyncio.create_task(follow(scripted, pollers, early))
        await eventually(lambda: len(early) == 1)
        for _ in range(3):
            scripted.advance()
            await eventually(lambda: len(early) == scripted.version + 1)
        reads = scripted.reads
        second = asyncio.create_task(follow(scripted, pollers, late))
        await eventually(lambda: len(late) == 1)
        assert scripted.reads == reads
        for _ in LIFE[4:]:
            scripted.advance()
            await eventually(lambda: len(early) == scripted.version + 1 and len(late) == scripted.version - 2)
        await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
        return early, late

    early, late = asyncio.run(scenario())
    assert seen(early) == EXPECTED
    assert seen(late) == EXPECTED[3:]


class ScriptedService:
    """The job service the events router calls, with the job's life scripted; the key owns every job."""

    def __init__(self, scripted: ScriptedJob):
        self.scripted = scripted
        self.args = SimpleNamespace(limits=LimitArgs())

    async def load(self, job_id: str, key_id: str | None = None):
        return SimpleNamespace(id=job_id, key_id=key_id or "owner")

    async def adopt_if_stale(self, record):
        return record

    async def load_progress(self, _record):
        return None

    async def queue_position(self, _record):
        return await self.scripted.read()  # one call per view of the job: the views below return it

    async def wait_for_change(self, _job_id: str, version: int, _timeout_s: float) -> int:
        return await self.scripted.wait_for_change(version)


def test_streams_through_the_router_share_one_poller_per_job():
    scripted = ScriptedJob(LIFE)
    app = FastAPI()
    app.state.services = SimpleNamespace(
        service=ScriptedService(scripted),
        keys=ApiKeys({hash_key(KEY)}),
        signer=UrlSigner(b"k", 60),
        views=SimpleNamespace(job=lambda _record, _progress, state: SimpleNamespace(model_dump=lambda mode: state)),
    )
    app.include_router(events_router.router)

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:

            def subscribed() -> bool:
                slots = getattr(app.state, "stream_slots", None)
                return slots is not None and slots.open_total == STREAMS

            path = events_router.events_path(JOB_ID)
            streams = [http.get(path, headers={"x-key": KEY}) for _ in range(STREAMS)]
            # The responses are whole only at the end: a pace lets every stream take each state first.
            *responses, _ = await asyncio.gather(*streams, play(scripted, subscribed, pace_s=0.05))
            return responses

    responses = asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    names = [name for name, _ in EXPECTED]
    for response in responses:
        assert response.status_code == 200
        assert [line[len("event: ") :] for line in response.text.splitlines() if line.startswith("event: ")] == names
    assert scripted.reads <= len(LIFE) + 1, f"{STREAMS} streams of one job made {scripted.reads} reads"
    assert app.state.job_pollers.polling == {}


def test_a_failed_read_ends_every_stream_of_the_job_and_the_next_stream_polls_afresh():
    async def scenario():
        scripted, pollers = ScriptedJob(LIFE), JobPollers()
        real_read = scripted.read

        async def broken_read() -> dict:
            raise ConnectionError("database gone")

        scripted.read = broken_read
        outcomes = await asyncio.gather(*(follow(scripted, pollers, []) for _ in range(3)), return_exceptions=True)
        assert pollers.polling == {}
        scripted.read = real_read
        received = []
        playing = play(scripted, lambda: len(received) == 1, lambda version: len(received) == version + 1)
        await asyncio.wait_for(asyncio.gather(follow(scripted, pollers, received), playing), 5)
        return outcomes, received

    outcomes, received = asyncio.run(scenario())
    assert all(isinstance(outcome, PollFailed) and "database gone" in str(outcome) for outcome in outcomes)
    assert seen(received) == EXPECTED
