"""One poller per job that event streams follow on this ingress replica, so the streams of a job share its reads.

Each stream used to read the job (database row, live progress, queue position) itself, on every change and at least
every REREAD_S: fifty open streams of one job (a page in many tabs, a bot, a script) made fifty reads where one does.
A poller reads the way one stream did (read, then wait for the live channel's news of the job or REREAD_S) and
hands each state it reads to every subscriber. It stops when the job ends or disappears (after handing over that
last state) or when its last subscriber leaves; a stream that comes later starts a new one.

A subscription keeps only the newest state not yet taken: a subscriber that falls behind (a slow client) skips to
it, as a stream reading for itself did, so a poller holds at most one state per subscriber.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from serve_apps.api.protocol import JobStatus

ReadJob = Callable[[], Awaitable[dict | None]]
WaitForChange = Callable[[int], Awaitable[int]]
_NOTHING = object()  # no state yet (None is a state: the job is gone)


class PollFailed(Exception):
    """Reading the job failed in the poller shared by this stream; the stream ends and the client reconnects."""


class Subscription:
    """What one stream is handed: the newest state of the job it has not taken yet."""

    def __init__(self) -> None:
        self._state = _NOTHING
        self._error: BaseException | None = None
        self._arrived = asyncio.Event()

    def put(self, job: dict | None) -> None:
        self._state = job
        self._arrived.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._arrived.set()

    async def next_state(self) -> dict | None:
        """The job as `GET /v1/jobs/{id}` shows it (None once it is gone), waiting for one not taken yet."""
        while self._state is _NOTHING:
            if self._error is not None:
                raise PollFailed(f"reading the job failed: {self._error!r}") from self._error
            self._arrived.clear()
            await self._arrived.wait()
        state, self._state = self._state, _NOTHING
        return state


class JobPoller:
    """Reads one job for all its subscribers, in a task of its own that lives while someone listens."""

    def __init__(self, read_job: ReadJob, wait_for_change: WaitForChange, on_stop: Callable[[JobPoller], None]):
        """`on_stop(poller)` tells the registry it polls no more (it may say so twice: forgetting is idempotent)."""
        self.read_job = read_job
        self.wait_for_change = wait_for_change
        self.on_stop = on_stop
        self.subscriptions: set[Subscription] = set()
        self.latest: object = _NOTHING  # handed to a subscriber that joins between reads
        self.task: asyncio.Task | None = None

    def add(self) -> Subscription:
        subscription = Subscription()
        if self.latest is not _NOTHING:
            subscription.put(self.latest)
        self.subscriptions.add(subscription)
        if self.task is None:
            self.task = asyncio.create_task(self._poll())
        return subscription

    def remove(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)
        if not self.subscriptions and self.task is not None and not self.task.done():
            self.task.cancel()
            self.on_stop(self)  # at once: a stream that opens now starts a new poller, not this cancelled one

    async def _poll(self) -> None:
        version = 0
        try:
            while True:
                job = await self.read_job()
                self.latest = job
                for subscription in self.subscriptions:
                    subscription.put(job)
                if job is None or job["status"] != JobStatus.PENDING.value:
                    return
                # Subscribers take this state before the next read: a wait that returns at once (the job changed
                # while it was read) would otherwise read again before any of them ran.
                await asyncio.sleep(0)
                version = await self.wait_for_change(version)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            for subscription in self.subscriptions:
                subscription.fail(error)
        finally:
            self.on_stop(self)


class JobPollers:
    """This replica's pollers by job id. Use from the event loop only (as the streams do)."""

    def __init__(self) -> None:
        self.polling: dict[str, JobPoller] = {}

    @contextmanager
    def subscribe(self, job_id: str, read_job: ReadJob, wait_for_change: WaitForChange) -> Iterator[Subscription]:
        """A subscription to the job's poller, started with these functions if none polls it yet; held until the
        block ends. The functions must read and wait on `job_id` alone and hold no one stream's state: a poller
        keeps the first subscriber's for its whole life."""
        poller = self.polling.get(job_id)
        if poller is None:
            poller = JobPoller(read_job, wait_for_change, on_stop=functools.partial(self._forget, job_id))
            self.polling[job_id] = poller
        subscription = poller.add()
        try:
            yield subscription
        finally:
            poller.remove(subscription)

    def _forget(self, job_id: str, poller: JobPoller) -> None:
        if self.polling.get(job_id) is poller:
            del self.polling[job_id]
