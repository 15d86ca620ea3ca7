"""Signed webhook delivery with retries, recorded in the job and kept in the database until it ends.

Signatures follow the Standard Webhooks scheme Replicate uses: headers `webhook-id`,
`webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
keyed with the job's `webhook_secret`. A receiver checks the HMAC and that the timestamp is
recent. BFL's own header is sent beside them, `X-BFL-Signature: sha256=<hex HMAC-SHA256 of the
body>` with the same secret, so receivers written for BFL work unchanged. Failed deliveries are
retried with exponential backoff. Each attempt first checks the URL resolves to a public address
(it may have changed since submit) and connects to that very address; what went wrong is
recorded by kind only (e.g. ConnectError), so the record is no port scanner.

A delivery is durable (serve_apps/store/webhooks.py): the job's final write makes it due, each attempt
is claimed in the database before it is sent, and its outcome and the next attempt's time are written
after. `WebhookSender` sends a job's webhook when it ends and, from the orphan sweeper, any delivery
that is due, so one whose replica died between attempts goes on elsewhere, within `max_attempts` in all.

A receiver's reply is not needed beyond its status: at most MAX_REPLY_BYTES of it are read, raw (never
decompressed), and `timeout_s` bounds each attempt as a whole (the address check, connect, send, the answer),
so a receiver that trickles its answer or sends a gzip bomb costs neither time nor memory.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable

import httpx

from serve_apps.config import AppArgs
from serve_apps.jobs.records import JobState, WebhookDelivery
from serve_apps.security.network import BlockedUrl, check_public_url_async, pin
from serve_apps.store import JobsRepository
from serve_apps.store.webhooks import WebhookDeliveries

logger = logging.getLogger("flux_serve.jobs")

MAX_REPLY_BYTES = 1024  # of a receiver's reply body; the rest is never read
CLAIM_MARGIN_S = 10.0  # an attempt's claim outlasts its timeout by this (the outcome is written after it)


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def bfl_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed_headers(secret: str | None, webhook_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    timestamp = int(timestamp or time.time())
    headers = {"content-type": "application/json", "webhook-id": webhook_id, "webhook-timestamp": str(timestamp)}
    if secret:
        headers["webhook-signature"] = signature(secret, webhook_id, timestamp, body)
        headers["x-bfl-signature"] = bfl_signature(secret, body)
    return headers


async def _attempt(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict, allowed_private_hosts: list[str], timeout_s: float
) -> int:
    """One POST's status code, all of it within `timeout_s`; a deadline after the status keeps the status."""
    status_code = None
    try:
        async with asyncio.timeout(timeout_s):
            target = pin(url, await check_public_url_async(url, allowed_private_hosts, "webhook_url"))
            headers = {**headers, "accept-encoding": "identity", **target.headers}
            async with client.stream(
                "POST", target.url, content=body, headers=headers, extensions=target.extensions
            ) as response:
                status_code = response.status_code
                read_bytes = 0
                async for chunk in response.aiter_raw():
                    read_bytes += len(chunk)
                    if read_bytes >= MAX_REPLY_BYTES:
                        break
    except TimeoutError:
        if status_code is None:
            raise
    return status_code


def backoff_s(initial_backoff_s: float, attempt: int) -> float:
    """The wait after failed attempt number `attempt`: doubling from `initial_backoff_s`."""
    return initial_backoff_s * 2 ** (attempt - 1)


async def deliver(
    url: str,
    payload: dict,
    secret: str | None,
    webhook_id: str,
    max_attempts: int,
    initial_backoff_s: float,
    timeout_s: float,
    allowed_private_hosts: list[str],
    on_attempt=None,
    first_attempt: int = 1,
    claim_attempt: Callable[[int], Awaitable[bool]] | None = None,
) -> bool:
    """POST until a 2xx answer or attempts run out; `on_attempt(dict)` records each try, with `retry_in_s`,
    the wait before the next one (None: there is none).

    `first_attempt` goes on with a delivery whose earlier attempts were made (elsewhere, perhaps);
    `claim_attempt(n)` is awaited before attempt n, and False stops here (another replica has it).
    A URL that resolves to a private address ends the delivery at once (no retries). Each attempt has
    `timeout_s` in all; no more than MAX_REPLY_BYTES of a reply are read."""
    body = json.dumps(payload).encode()
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        for attempt in range(first_attempt, max_attempts + 1):
            if claim_attempt is not None and not await claim_attempt(attempt):
                return False
            started = time.time()
            retry_in_s = backoff_s(initial_backoff_s, attempt) if attempt < max_attempts else None
            try:
                headers = signed_headers(secret, webhook_id, body)
                status_code = await _attempt(client, url, body, headers, allowed_private_hosts, timeout_s)
                outcome = {"status_code": status_code}
                delivered = 200 <= status_code < 300
            except BlockedUrl as blocked:
                outcome, delivered, retry_in_s = {"error": str(blocked)}, False, None
            except (httpx.HTTPError, TimeoutError) as error:
                outcome = {"error": f"{type(error).__name__}: the delivery failed"}
                delivered = False
            if delivered:
                retry_in_s = None
            if on_attempt:
                await on_attempt(
                    {"attempt": attempt, "at": started, "delivered": delivered, **outcome, "retry_in_s": retry_in_s}
                )
            if retry_in_s is None:
                return delivered
            await asyncio.sleep(retry_in_s)
    return False


class WebhookSender:
    """Sends finished jobs' webhooks from their rows in the database, one task per job on this replica."""

    def __init__(self, jobs: JobsRepository, args: AppArgs, payload: Callable[[JobState], dict]):
        """`payload(record)` is what a webhook sends."""
        self.jobs = jobs
        self.deliveries = WebhookDeliveries(jobs)
        self.args = args
        self.payload = payload
        self.tasks: dict[str, asyncio.Task] = {}

    def start(self, job_id: str) -> None:
        """Send this job's webhook in the background, unless this replica is sending it already."""
        if job_id in self.tasks:
            return
        task = asyncio.create_task(self.send(job_id))
        self.tasks[job_id] = task
        task.add_done_callback(lambda _task: self.tasks.pop(job_id, None))

    async def start_due(self) -> None:
        """Every delivery due now, wherever it began (the sweeper's part: a replica that died between
        attempts loses no webhook)."""
        for job_id in await asyncio.to_thread(self.deliveries.due, self.args.webhooks.max_attempts):
            self.start(job_id)

    async def send(self, job_id: str) -> bool:
        """Deliver from the attempt after those made, each claimed first; True once a receiver took it."""
        made = await asyncio.to_thread(self.deliveries.attempts_made, job_id)
        record = None if made is None else await asyncio.to_thread(self.jobs.load, job_id)
        if record is None or record.webhook is None:
            return False  # delivered, given up, or of a kind this replica does not run
        settings = self.args.webhooks
        webhook = record.webhook

        async def claim(attempt: int) -> bool:
            hold_s = settings.timeout_s + CLAIM_MARGIN_S
            return await asyncio.to_thread(self.deliveries.claim, job_id, attempt, settings.max_attempts, hold_s)

        async def remember(outcome: dict) -> None:
            retry_in_s = outcome.pop("retry_in_s")
            webhook.deliveries.append(WebhookDelivery(**outcome))
            if not await asyncio.to_thread(
                self.deliveries.record, record.model_copy(deep=True), outcome["attempt"], retry_in_s
            ):
                logger.warning("job %s: webhook attempt %d outlived its claim", job_id, outcome["attempt"])

        return await deliver(
            webhook.url,
            self.payload(record),
            webhook.secret,
            webhook_id=record.id,
            max_attempts=settings.max_attempts,
            initial_backoff_s=settings.initial_backoff_s,
            timeout_s=settings.timeout_s,
            allowed_private_hosts=self.args.network.allowed_private_hosts,
            on_attempt=remember,
            first_attempt=made + 1,
            claim_attempt=claim,
        )
