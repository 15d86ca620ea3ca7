"""The live table of jobs: latest progress, cancel requests, ends, and a version per job that readers wait on.

One table behind every channel: the in-process channel holds one, the cluster's named actor holds one.
It is transient by design: progress lost with its holder is sent again at the next step, and a cancel
is also in the database, where the running job's heartbeat finds it and publishes it again.

A job's version grows at each change of its entry; `wait_for_change(job_id, after, timeout_s)` returns
as soon as it is above `after`. Versions start at the holder's start time in microseconds, so those of
a restarted holder are above every version the lost one gave: a reader never waits on a stale one.

Bounded: an ended job's entry goes ENDED_TTL_S after its end (long enough for a late step of its worker
to be told to stop, for a late progress not to change it, and for its last progress to be shown with its
final state), any other IDLE_TTL_S after its last change, and the least recently changed first once MAX_ENTRIES are held.
A step preview (a few KB) is kept only with a job's latest progress, only until the job ends, and for at most
MAX_PREVIEWS jobs (the least recently previewed lose theirs first), so previews never hold more than a few MB.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from deployments.progress import Progress

MAX_ENTRIES = 100_000
MAX_PREVIEWS = 1_000
IDLE_TTL_S = 3600.0
ENDED_TTL_S = 300.0
SWEEP_EVERY_S = 10.0


@dataclass
class JobLive:
    """One job's live entry. An ended job counts as cancelled: whatever still works on it should stop."""

    progress: Progress | None = None
    cancel: bool = False
    ended: bool = False
    version: int = 0
    changed_at: float = 0.0


class LiveState:
    """Thread-safe: a step loop publishes from a worker thread while readers wait on an event loop."""

    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        idle_ttl_s: float = IDLE_TTL_S,
        ended_ttl_s: float = ENDED_TTL_S,
        clock=time.monotonic,
        max_previews: int = MAX_PREVIEWS,
    ):
        self.max_entries = max_entries
        self.max_previews = max_previews
        self._previews: OrderedDict[str, None] = OrderedDict()  # jobs whose progress holds a preview, oldest first
        self.idle_ttl_s = idle_ttl_s
        self.ended_ttl_s = ended_ttl_s
        self.clock = clock
        self._entries: OrderedDict[str, JobLive] = OrderedDict()  # least recently changed first
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = {}
        self._lock = threading.Lock()
        self._sequence = time.time_ns() // 1000
        self._swept_at = clock()

    def __len__(self) -> int:
        return len(self._entries)

    # -- changes ----------------------------------------------------------------------------

    def publish(self, progress: Progress) -> None:
        """The job's latest progress; ignored once the job ended (a late step of its worker)."""
        with self._lock:
            entry = self._entries.get(progress.job_id) or JobLive()
            if not entry.ended:
                entry.progress = progress
                self._changed(progress.job_id, entry)
                self._keep_preview(progress.job_id, progress.preview is not None)

    def request_cancel(self, job_id: str) -> None:
        with self._lock:
            entry = self._entries.get(job_id) or JobLive()
            if not (entry.cancel or entry.ended):
                entry.cancel = True
                self._changed(job_id, entry)

    def finish(self, job_id: str) -> None:
        """The job ended (its final state is in the database): wake its readers, stop its workers. Its
        last progress stays readable until the entry goes (where a cancelled job stopped, say)."""
        with self._lock:
            entry = self._entries.get(job_id) or JobLive()
            if not entry.ended:
                entry.ended = True
                self._changed(job_id, entry)
                self._keep_preview(job_id, False)

    def _changed(self, job_id: str, entry: JobLive) -> None:
        self._sequence += 1
        entry.version, entry.changed_at = self._sequence, self.clock()
        self._entries[job_id] = entry
        self._entries.move_to_end(job_id)
        for loop, future in self._waiters.pop(job_id, []):
            try:
                loop.call_soon_threadsafe(_settle, future)
            except RuntimeError:  # that reader's event loop is closed: nobody waits there any more
                pass
        self._forget_old()

    def _keep_preview(self, job_id: str, kept: bool) -> None:
        """Note whether the job's progress holds a preview; past max_previews, the oldest one's is dropped."""
        self._previews.pop(job_id, None)
        if kept:
            self._previews[job_id] = None
        else:
            self._drop_preview(job_id)
        while len(self._previews) > self.max_previews:
            self._drop_preview(self._previews.popitem(last=False)[0])

    def _drop_preview(self, job_id: str) -> None:
        entry = self._entries.get(job_id)
        if entry is not None and entry.progress is not None and entry.progress.preview is not None:
            entry.progress = replace(entry.progress, preview=None, preview_step=None)

    def _forget_old(self) -> None:
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        now = self.clock()
        if now - self._swept_at < SWEEP_EVERY_S:
            return
        self._swept_at = now
        for job_id, entry in list(self._entries.items()):
            if now - entry.changed_at > (self.ended_ttl_s if entry.ended else self.idle_ttl_s):
                del self._entries[job_id]

    # -- reads ------------------------------------------------------------------------------

    def progress(self, job_id: str) -> Progress | None:
        entry = self._entries.get(job_id)
        return entry.progress if entry else None

    def cancelled_among(self, job_ids: Iterable[str]) -> set[str]:
        """Which of these jobs should stop: a cancel was asked for, or the job already ended."""
        with self._lock:
            return {
                job_id for job_id in job_ids if (entry := self._entries.get(job_id)) and (entry.cancel or entry.ended)
            }

    def version(self, job_id: str) -> int:
        entry = self._entries.get(job_id)
        return entry.version if entry else 0

    async def wait_for_change(self, job_id: str, after: int, timeout_s: float) -> int:
        """The job's version once it is above `after`, or after `timeout_s` whatever it is."""
        loop = asyncio.get_running_loop()
        with self._lock:
            current = self.version(job_id)
            if current > after:
                return current
            waiter = (loop, loop.create_future())
            self._waiters.setdefault(job_id, []).append(waiter)
        try:
            await asyncio.wait_for(waiter[1], timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                waiting = self._waiters.get(job_id, [])
                if waiter in waiting:
                    waiting.remove(waiter)
                if not waiting:
                    self._waiters.pop(job_id, None)
        return self.version(job_id)

    def waiting(self) -> int:
        """Readers waiting now (tests: none is left behind)."""
        with self._lock:
            return sum(len(waiting) for waiting in self._waiters.values())


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
