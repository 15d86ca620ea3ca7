"""Where input images are decoded: a small thread pool of their own, never the default executor.

Decoding is the one CPU-heavy thing the ingress does for a caller, and a caller chooses the bytes.
The default executor (asyncio.to_thread) also runs key checks, database calls and heartbeats, so a
burst of slow decodes there would stall every job's lease. Here at most `DECODE_WORKERS` images
decode at once and the rest wait their turn, while the default executor stays free.

Why threads and not processes: Pillow releases the GIL while it decodes, so two threads use two
cores; a process pool would add a spawn per worker inside a Ray replica and pickle every decoded
image back. What bounds one decode is refusing the costly inputs before decoding (a declared size
over max_pixels, a JPEG with over MAX_JPEG_SCANS scans: serve_apps/jobs/inputs.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

DECODE_WORKERS = 2
DECODE_POOL = ThreadPoolExecutor(max_workers=DECODE_WORKERS, thread_name_prefix="decode")  # threads start lazily

T = TypeVar("T")


async def decode_in_pool(decode: Callable[..., T], *args) -> T:
    """`decode(*args)` in the decoding pool (e.g. decode_image(data, field, max_pixels)); its exception is raised here."""
    return await asyncio.get_running_loop().run_in_executor(DECODE_POOL, functools.partial(decode, *args))
