"""Where input images are fetched and decoded: a fair share of turns per key, and a thread pool of their own.

Decoding is the one CPU-heavy thing the ingress does for a caller, and a caller chooses the bytes; a
fetch holds up to inputs.max_bytes in memory for up to inputs.timeout_s. `InputTurns` lets one key fetch
or decode at most `per_key` images at once on a replica and the replica at most `per_replica`: a key over
its share waits for its own turn (not holding a replica slot meanwhile), so one key's burst of images
never takes the whole pool and another key's image starts at once. Decodes run in their own pool
(serve_apps/jobs/executors.py), never the default executor, which database calls share.

Why threads and not processes: Pillow releases the GIL while it decodes, so two threads use two
cores; a process pool would add a spawn per worker inside a Ray replica and pickle every decoded
image back. What bounds one decode is refusing the costly inputs before decoding (a declared size
over max_pixels, a JPEG with over MAX_JPEG_SCANS scans: serve_apps/jobs/inputs.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import TypeVar

from serve_apps.jobs.executors import DECODES, run_in
from serve_apps.security.limits import RETRY_BUSY_S, RETRY_OVERLOADED_S, OverLimit

T = TypeVar("T")
REPLICA = ""  # the scope of the replica-wide slots; a key's scope is its id


async def decode_in_pool(decode: Callable[..., T], *args) -> T:
    """`decode(*args)` in the decoding pool (e.g. decode_image(data, field, max_pixels)); its exception is raised here."""
    return await run_in(DECODES, decode, *args)


class InputTurns:
    """Turns to fetch or decode an input image on this replica: at most `per_key` at once per key and
    `per_replica` in all. Slots exist only while someone holds or waits for one, so a key that stops
    sending images costs nothing (and each event loop gets its own)."""

    def __init__(self, per_key: int, per_replica: int):
        self.per_key = per_key
        self.per_replica = per_replica
        self.slots: dict[str, asyncio.Semaphore] = {}
        self.users: dict[str, int] = {}

    @asynccontextmanager
    async def turn(self, key_id: str, wait_s: float) -> AsyncIterator[None]:
        """Hold one of the key's slots, then one of the replica's, for the body; OverLimit (429 for the key's
        share, 503 for the replica's) if they are not both free within `wait_s`."""
        deadline_s = asyncio.get_running_loop().time() + wait_s
        async with self._slot(key_id, deadline_s), self._slot(REPLICA, deadline_s):
            yield

    @asynccontextmanager
    async def _slot(self, scope: str, deadline_s: float) -> AsyncIterator[None]:
        size = self.per_replica if scope == REPLICA else self.per_key
        slots = self.slots.setdefault(scope, asyncio.Semaphore(size))
        self.users[scope] = self.users.get(scope, 0) + 1
        try:
            if slots.locked():
                try:
                    await asyncio.wait_for(slots.acquire(), deadline_s - asyncio.get_running_loop().time())
                except asyncio.TimeoutError:
                    raise self._refusal(scope) from None
            else:
                await slots.acquire()  # free: taken at once, even with no time left
            try:
                yield
            finally:
                slots.release()
        finally:
            self.users[scope] -= 1
            if not self.users[scope]:
                del self.users[scope], self.slots[scope]

    def _refusal(self, scope: str) -> OverLimit:
        if scope == REPLICA:
            return OverLimit(
                f"this server is fetching or decoding {self.per_replica} input images at once "
                "(inputs.concurrent_images_per_replica) and this one's turn did not come within inputs.timeout_s",
                RETRY_OVERLOADED_S,
                HTTPStatus.SERVICE_UNAVAILABLE,
            )
        return OverLimit(
            f"this key's input images are fetched or decoded {self.per_key} at a time on each server "
            "(inputs.concurrent_images_per_key) and this one's turn did not come within inputs.timeout_s; "
            "send fewer images at once, or upload an image once (POST /v1/uploads) and send its id",
            RETRY_BUSY_S,
        )
