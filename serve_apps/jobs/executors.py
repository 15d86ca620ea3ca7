"""Thread pools of their own for the ingress calls that must not wait behind others, one kind of call each.

`asyncio.to_thread` runs on the event loop's default executor (min(32, CPUs + 4) threads), which every
database and storage call of the ingress shares. When the database slows down those calls pile up there,
and anything queued behind them waits as long as the whole backlog: a heartbeat misses its lease (another
replica adopts a healthy job and its work is lost), a key check holds up every request, polls included,
and a burst of input images decoding would do both. A call in one of these pools waits only for calls of
its own kind; a slow database still slows it, but by its own query, not by everyone's.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TypeVar

# threads start lazily, so a process that never beats or checks a key starts none
HEARTBEATS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="heartbeat")  # one short UPDATE per job a beat
KEY_CHECKS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="key-check")  # one keys lookup per request
DECODES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="decode")  # input images (serve_apps/jobs/decoding.py)

T = TypeVar("T")


async def run_in(pool: Executor, function: Callable[..., T], *args) -> T:
    """`function(*args)` in `pool`, awaited; its exception is raised here."""
    return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(function, *args))
