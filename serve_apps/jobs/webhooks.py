"""Signed webhook delivery with retries, recorded in the job.

Signatures follow the Standard Webhooks scheme Replicate uses: headers `webhook-id`,
`webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
keyed with the job's `webhook_secret`. A receiver checks the HMAC and that the timestamp is
recent. BFL's own header is sent beside them, `X-BFL-Signature: sha256=<hex HMAC-SHA256 of the
body>` with the same secret, so receivers written for BFL work unchanged. Failed deliveries are
retried with exponential backoff. Each attempt first checks the URL resolves to a public address
(it may have changed since submit) and connects to that very address; what went wrong is
recorded by kind only (e.g. ConnectError), so the record is no port scanner.

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
import time

import httpx

from serve_apps.security.network import BlockedUrl, check_public_url_async, pin

MAX_REPLY_BYTES = 1024  # of a receiver's reply body; the rest is never read


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
) -> bool:
    """POST until a 2xx answer or attempts run out; `on_attempt(dict)` records each try.

    A URL that resolves to a private address ends the delivery at once (no retries). Each attempt has
    `timeout_s` in all; no more than MAX_REPLY_BYTES of a reply are read."""
    body = json.dumps(payload).encode()
    backoff_s = initial_backoff_s
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        for attempt in range(1, max_attempts + 1):
            started = time.time()
            try:
                headers = signed_headers(secret, webhook_id, body)
                status_code = await _attempt(client, url, body, headers, allowed_private_hosts, timeout_s)
                outcome = {"status_code": status_code}
                delivered = 200 <= status_code < 300
            except BlockedUrl as blocked:
                if on_attempt:
                    await on_attempt({"attempt": attempt, "at": started, "delivered": False, "error": str(blocked)})
                return False
            except (httpx.HTTPError, TimeoutError) as error:
                outcome = {"error": f"{type(error).__name__}: the delivery failed"}
                delivered = False
            if on_attempt:
                await on_attempt({"attempt": attempt, "at": started, "delivered": delivered, **outcome})
            if delivered:
                return True
            if attempt < max_attempts:
                await asyncio.sleep(backoff_s)
                backoff_s *= 2
    return False
