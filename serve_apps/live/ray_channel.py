"""The live channel of a cluster: one named, detached async Ray actor that every replica reaches.

The first replica to ask creates it (`get_if_exists`), the others get the same one by name. It needs no
CPU of its own and is restarted wherever Ray can place it if its node dies (`max_restarts=-1`); what it
held is lost then: progress comes again with the next step, a cancel with the next heartbeat of its job
(the database keeps it), an end with the job's final state (which readers also find in the database).
So every call here is best effort: on a failure a read answers "nothing known", a wait falls back to a
sleep, and nothing ever fails a job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future

from deployments.progress import Progress
from serve_apps.live.channel import InProcessChannel

logger = logging.getLogger("flux_serve.live")

ACTOR_NAME = "flux-live-channel"
NAMESPACE = "flux_serve"
CALL_TIMEOUT_S = 5.0
MAX_CONCURRENT_CALLS = 4096  # each open events stream holds one waiting call
WARN_EVERY_S = 30.0


class LiveActor(InProcessChannel):
    """The cluster's live table: the in-process channel, served by an async actor (waits cost no thread)."""

    async def cancelled_among(self, job_ids: list[str]) -> set[str]:
        return self.state.cancelled_among(job_ids)

    async def entries(self) -> int:
        return len(self.state)


def live_actor(name: str = ACTOR_NAME):
    """The named actor, created by the first caller; Ray must be initialized (a replica, or `ray.init`)."""
    import ray

    return (
        ray.remote(LiveActor)
        .options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=-1,
            num_cpus=0,
            max_concurrency=MAX_CONCURRENT_CALLS,
        )
        .remote()
    )


class RayChannel:
    """A replica's handle on the cluster's live channel (see `channel.LiveChannel`)."""

    def __init__(self, name: str = ACTOR_NAME, call_timeout_s: float = CALL_TIMEOUT_S):
        self.name = name
        self.call_timeout_s = call_timeout_s
        self._actor = None
        self._warned_at = float("-inf")

    def actor(self):
        if self._actor is None:
            self._actor = live_actor(self.name)
        return self._actor

    def _failed(self, what: str, error: Exception) -> None:
        """Log at most every WARN_EVERY_S; a handle on an actor gone for good is made again next time."""
        import ray

        if isinstance(error, ray.exceptions.RayActorError):
            self._actor = None
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            logger.warning("live channel %s: %s failed (%s); jobs go on without it", self.name, what, error)

    async def _call(self, method: str, *args, default=None, timeout_s: float | None = None):
        try:
            call = getattr(self.actor(), method).remote(*args)
            return await asyncio.wait_for(call, timeout_s or self.call_timeout_s)
        except Exception as error:  # a restarting or unreachable actor: live state is best effort
            self._failed(method, error)
            return default

    async def publish(self, progress: Progress) -> None:
        await self._call("publish", progress)

    async def progress(self, job_id: str) -> Progress | None:
        return await self._call("progress", job_id)

    async def request_cancel(self, job_id: str) -> None:
        await self._call("request_cancel", job_id)

    async def cancel_requested(self, job_id: str) -> bool:
        return job_id in await self._call("cancelled_among", [job_id], default=set())

    async def finish(self, job_id: str) -> None:
        await self._call("finish", job_id)

    async def version(self, job_id: str) -> int:
        return await self._call("version", job_id, default=0)

    async def wait_for_change(self, job_id: str, after: int, timeout_s: float) -> int:
        """On a failure, a plain sleep of `timeout_s`: the reader then reads the database as it would."""
        started = time.monotonic()
        version = await self._call(
            "wait_for_change", job_id, after, timeout_s, timeout_s=timeout_s + self.call_timeout_s
        )
        if version is None:
            await asyncio.sleep(max(0.0, timeout_s - (time.monotonic() - started)))
            return after
        return version

    def send(self, progress: Progress) -> None:
        try:
            self.actor().publish.remote(progress)
        except Exception as error:
            self._failed("publish", error)

    def ask_cancelled(self, job_ids: Sequence[str]) -> Future:
        try:
            return self.actor().cancelled_among.remote(list(job_ids)).future()
        except Exception as error:
            self._failed("cancelled_among", error)
            failed: Future = Future()
            failed.set_exception(error)
            return failed

    async def entries(self) -> int:
        """How many jobs the actor holds (tests: its memory stays bounded)."""
        return await self._call("entries", default=0)
