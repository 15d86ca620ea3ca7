"""The live channel's port, and its implementation inside one process.

Progress and cancel of running jobs travel here; final states stay in the database. The ingress uses
the async face (publish, read, cancel, end, wait for a change); a step loop in a worker thread uses
the two calls that never wait on the network: `send` a progress, `ask_cancelled` for a batch's jobs
(a future, read when it is done). `serve_apps.live.ray_channel` is the cluster's implementation.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Protocol

from deployments.progress import Progress
from serve_apps.live.state import LiveState


class LiveChannel(Protocol):
    async def publish(self, progress: Progress) -> None: ...

    async def progress(self, job_id: str) -> Progress | None: ...

    async def request_cancel(self, job_id: str) -> None: ...

    async def cancel_requested(self, job_id: str) -> bool: ...

    async def finish(self, job_id: str) -> None:
        """The job ended: its readers wake (its final state is in the database), its workers stop."""

    async def version(self, job_id: str) -> int: ...

    async def wait_for_change(self, job_id: str, after: int, timeout_s: float) -> int:
        """The job's version once above `after`, or whatever it is after `timeout_s`."""

    def send(self, progress: Progress) -> None:
        """Publish without waiting (a step loop)."""

    def ask_cancelled(self, job_ids: Sequence[str]) -> Future:
        """Which of these jobs should stop, as a future of a set of ids (a step loop reads it when done)."""


class InProcessChannel:
    """The live channel of one process: unit tests and a single-process service."""

    def __init__(self, state: LiveState | None = None):
        self.state = state or LiveState()

    async def publish(self, progress: Progress) -> None:
        self.state.publish(progress)

    async def progress(self, job_id: str) -> Progress | None:
        return self.state.progress(job_id)

    async def request_cancel(self, job_id: str) -> None:
        self.state.request_cancel(job_id)

    async def cancel_requested(self, job_id: str) -> bool:
        return bool(self.state.cancelled_among([job_id]))

    async def finish(self, job_id: str) -> None:
        self.state.finish(job_id)

    async def version(self, job_id: str) -> int:
        return self.state.version(job_id)

    async def wait_for_change(self, job_id: str, after: int, timeout_s: float) -> int:
        return await self.state.wait_for_change(job_id, after, timeout_s)

    def send(self, progress: Progress) -> None:
        self.state.publish(progress)

    def ask_cancelled(self, job_ids: Sequence[str]) -> Future:
        answer: Future = Future()
        answer.set_result(self.state.cancelled_among(job_ids))
        return answer


@functools.cache
def local_channel() -> InProcessChannel:
    """This process's one channel, shared by every job core and worker in it."""
    return InProcessChannel()
