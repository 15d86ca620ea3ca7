"""Heartbeats and key checks keep going while the default executor (asyncio.to_thread) is full of slow
database calls: each runs in a thread pool of its own (serve_apps/jobs/executors.py)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from serve_apps.api.routers.deps import require_key
from serve_apps.security.auth import ApiKeys, hash_key, key_id
from tests.unit.test_overload import make_runner

KEY = "a-key-of-the-caller"
QUICK_S = 1.0


@contextlib.asynccontextmanager
async def default_executor_blocked():
    """Every thread of the loop's default executor busy with a call that ends only when the block does."""
    threads = 2
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=threads))
    unblock = threading.Event()
    stuck = [asyncio.create_task(asyncio.to_thread(unblock.wait, 30)) for _ in range(threads)]
    await asyncio.sleep(0.05)  # the slow calls have taken the threads
    try:
        yield
    finally:
        unblock.set()
        await asyncio.gather(*stuck)


def test_a_key_check_completes_while_the_default_executor_is_blocked():
    services = SimpleNamespace(keys=ApiKeys({hash_key(KEY)}))
    request = SimpleNamespace(headers={"x-key": KEY}, app=SimpleNamespace(state=SimpleNamespace(services=services)))

    async def check() -> tuple[str, float]:
        async with default_executor_blocked():
            started = time.monotonic()
            found = await asyncio.wait_for(require_key(request), 10)
            return found, time.monotonic() - started

    found, took_s = asyncio.run(check())
    assert found == key_id(hash_key(KEY))
    assert took_s < QUICK_S, f"the key check waited {took_s:.1f} s behind the default executor's calls"


def test_heartbeats_go_on_while_the_default_executor_is_blocked(tmp_path):
    service, _record, claim = make_runner(tmp_path, denoise=None)
    service.args.jobs.heartbeat_s = 0.05
    runner = service.core.runner
    beats = []
    renew = service.jobs.heartbeat

    def heartbeat(job_claim):
        beats.append(time.monotonic())
        return renew(job_claim)

    service.jobs.heartbeat = heartbeat

    async def beat_for_a_while() -> None:
        async with default_executor_blocked():
            beating = asyncio.create_task(runner._heartbeat(claim))
            await asyncio.sleep(QUICK_S)
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)

    asyncio.run(beat_for_a_while())
    assert len(beats) >= 3, f"{len(beats)} heartbeats in {QUICK_S} s: they waited behind the default executor"
