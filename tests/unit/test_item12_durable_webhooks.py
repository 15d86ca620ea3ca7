"""Webhook retries outlive the replica that began them (issue 25): a delivery is kept with its job in the
database (attempts made, when the next is due), each attempt claimed there first, so another replica's
sweeper sends it on, max_attempts still counts every try, and a delivered or given-up webhook is never
sent again. Receivers are loopback HTTP servers; on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deployments.contracts import GenerationParams
from serve_apps.config import AppArgs
from serve_apps.jobs.core import JobCore
from serve_apps.jobs.records import JobRecord, JobStatus, Stage, Webhook
from serve_apps.store import Database
from serve_apps.store.storage import JobStore, new_job_id

BACKOFF_S = 0.3


class Receiver:
    """Answers the n-th POST with statuses[n] (the last repeats) and keeps each POST's webhook-id."""

    def __init__(self, *statuses: int):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["content-length"]))
                received.append(self.headers["webhook-id"])
                self.send_response(statuses[min(len(received), len(statuses)) - 1])
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(*statuses: int) -> Receiver:
        made.append(Receiver(*statuses))
        return made[-1]

    yield make
    for each in made:
        each.server.shutdown()
        each.server.server_close()


def replica(database_url: str, tmp_path, name: str, max_attempts: int = 3) -> JobCore:
    """One ingress replica's job core: its own repository on the shared database."""
    args = AppArgs(
        storage_url=str(tmp_path),
        webhooks={"max_attempts": max_attempts, "initial_backoff_s": BACKOFF_S, "timeout_s": 5},
        network={"allowed_private_hosts": ["127.0.0.1"]},
    )
    payload = lambda record: {"id": record.id, "status": record.status.value}  # noqa: E731
    return JobCore(
        Database.open(database_url).jobs, JobStore(str(tmp_path / "store")), [], args, payload, None, None, name
    )


def job(url: str, **fields) -> JobRecord:
    params = GenerationParams(prompt="p", width=64, height=64, steps=4, guidance=None, seed=1)
    webhook = Webhook(url=url, secret="s3cret")
    return JobRecord(id=new_job_id(), model="m", key_id="0123456789ab", params=params, webhook=webhook, **fields)


def attempts_recorded(core: JobCore, job_id: str) -> list[tuple[int, bool, int | None]]:
    return [(d.attempt, d.delivered, d.status_code) for d in core.jobs.load(job_id).webhook.deliveries]


async def until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the delivery never got there"
        await asyncio.sleep(0.02)


async def finish_and_die_after_the_first_attempt(core: JobCore, url: str) -> str:
    """The job ends Ready on `core`, whose first webhook attempt fails; the replica dies in the backoff."""
    record, claim = core.jobs.create(job(url))
    await core.runner.end(claim, record, JobStatus.READY)
    await until(lambda: len(attempts_recorded(core, record.id)) == 1)
    sending = core.runner.webhooks.tasks[record.id]
    sending.cancel()
    await asyncio.gather(sending, return_exceptions=True)
    return record.id


def test_a_delivery_whose_replica_died_between_attempts_is_sent_by_another(database_url, tmp_path, receiver):
    hook = receiver(503, 200)
    first, second = replica(database_url, tmp_path, "a"), replica(database_url, tmp_path, "b")

    async def scenario() -> str:
        job_id = await finish_and_die_after_the_first_attempt(first, hook.url)
        await second.sweep()
        assert len(hook.received) == 1, "the next attempt waits for its backoff, wherever it is made"
        await asyncio.sleep(BACKOFF_S + 0.1)
        await second.sweep()
        await until(lambda: len(hook.received) == 2 and not second.runner.webhooks.tasks)
        for core in (second, replica(database_url, tmp_path, "c"), first):
            await core.sweep()
            await core.runner.webhooks.send(job_id)
        return job_id

    job_id = asyncio.run(scenario())
    assert hook.received == [job_id, job_id], "delivered once, never sent again"
    assert attempts_recorded(second, job_id) == [(1, False, 503), (2, True, 200)]
    assert second.runner.webhooks.deliveries.attempts_made(job_id) is None


def test_max_attempts_counts_the_attempts_of_every_replica(database_url, tmp_path, receiver):
    hook = receiver(500)
    first, second = replica(database_url, tmp_path, "a", 2), replica(database_url, tmp_path, "b", 2)

    async def scenario() -> str:
        job_id = await finish_and_die_after_the_first_attempt(first, hook.url)
        await asyncio.sleep(BACKOFF_S + 0.1)
        await second.sweep()
        await until(lambda: len(hook.received) == 2 and not second.runner.webhooks.tasks)
        await asyncio.sleep(2 * BACKOFF_S)
        await second.sweep()
        await second.runner.webhooks.send(job_id)
        return job_id

    job_id = asyncio.run(scenario())
    assert len(hook.received) == 2, "given up after max_attempts in all"
    assert attempts_recorded(second, job_id) == [(1, False, 500), (2, False, 500)]
    assert second.runner.webhooks.deliveries.attempts_made(job_id) is None


def test_replicas_that_see_one_delivery_due_at_once_send_it_once(database_url, tmp_path, receiver):
    hook = receiver(200)
    replicas = [replica(database_url, tmp_path, name) for name in "abcd"]
    ended = job(hook.url, status=JobStatus.READY, stage=Stage.DONE)  # stored final: its webhook is due at once
    replicas[0].jobs.create(ended)

    async def race() -> list[bool]:
        return await asyncio.gather(*(core.runner.webhooks.send(ended.id) for core in replicas))

    assert sorted(asyncio.run(race())) == [False, False, False, True]
    assert hook.received == [ended.id]
