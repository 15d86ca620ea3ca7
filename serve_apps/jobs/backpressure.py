"""A model's full queue is a wait, not a failure, for a job already admitted.

Ray Serve refuses a handle call with BackPressureError once `max_queued_requests` calls wait for
a replica (counted per ingress replica). By then the submit that admitted the job has long answered
with its id, so there is no request left to answer 503: the job waits for room within its own
timeout, and new submits are refused at the door instead (limits.max_queued_jobs: 503 with
Retry-After). So overload never fails a job that was accepted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ray.serve.exceptions import BackPressureError

FIRST_WAIT_S = 0.05
MAX_WAIT_S = 2.0

T = TypeVar("T")


async def when_room(call: Callable[[], Awaitable[T]]) -> T:
    """`await call()`, called again after a growing pause while the deployment's queue is full."""
    wait_s = FIRST_WAIT_S
    while True:
        try:
            return await call()
        except BackPressureError:
            await asyncio.sleep(wait_s)
            wait_s = min(2 * wait_s, MAX_WAIT_S)
