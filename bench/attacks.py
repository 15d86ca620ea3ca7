"""The attack table: hostile requests sent over real HTTP to a running service, each with the answer
it must get, how fast, and what it may cost the ingress in memory.

Shared by the adversarial suite (tests/adversarial, which asserts the answers) and
`python -m bench.reliability --attacks` (which prints time and memory per attack). The service must
let loopback through `network.allowed_private_hosts` so that it can reach the bomb server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import psutil

from bench.bombs import BombServer, Payloads

MODEL = "flux-2-klein-4b"
INGRESS_TITLE = "ServeReplica:flux:Ingress"
QUICK_JOB = {"prompt": "a red circle on a blue background", "width": 64, "height": 64, "steps": 2}
SLOW_JOB = {"prompt": "a red circle on a blue background", "width": 512, "height": 512, "steps": 50}
OVER_BODY_LIMIT_BYTES = 33 * 2**20  # limits.max_body_bytes is 32 MiB by default
STREAMS_OPENED = 70  # more than two replicas' limits.max_streams_per_key (32 each)


@dataclass
class Target:
    """Where the attacks go: the service, a key, a second key's normal work, and the bomb server."""

    base_url: str
    key: str
    bombs: BombServer

    def client(self, **options) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"x-key": self.key}, timeout=60, **options)


@dataclass
class Answer:
    status: int
    text: str
    elapsed_s: float = 0.0


@dataclass
class Attack:
    name: str
    what: str  # the README's attack column
    send: Callable[[Target], Answer]
    statuses: frozenset[int]  # any of these is the right answer
    max_s: float = 10.0  # on a loaded 2-core box
    says: str = ""  # the answer must contain this (it teaches what to change)
    never_says: tuple[str, ...] = field(default_factory=tuple)  # nor leak this


def submit(target: Target, **fields) -> Answer:
    with target.client() as http:
        response = http.post(f"/v1/{MODEL}", json={**QUICK_JOB, **fields})
    return Answer(response.status_code, response.text)


def image_url(path: str) -> Callable[[Target], Answer]:
    return lambda target: submit(target, input_image=target.bombs.url(path))


def inline(payload: Callable[[Payloads], bytes]) -> Callable[[Target], Answer]:
    return lambda target: submit(target, input_image=base64.b64encode(payload(target.bombs.payloads)).decode())


def chunked_capital(target: Target) -> Answer:
    """33 MiB announced as `Transfer-Encoding: Chunked` (capital C), written by hand on a raw socket."""
    address = urlsplit(target.base_url)
    head = (
        f"POST /v1/{MODEL} HTTP/1.1\r\nHost: {address.netloc}\r\nx-key: {target.key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: Chunked\r\n\r\n"
    ).encode()
    chunk = b"%x\r\n%s\r\n" % (2**20, b" " * 2**20)
    with socket.create_connection((address.hostname, address.port), timeout=30) as raw:
        raw.sendall(head)
        try:
            for _ in range(OVER_BODY_LIMIT_BYTES // 2**20):
                raw.sendall(chunk)
            raw.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # refused mid-body: the answer is waiting
        reply = raw.recv(65536).decode(errors="replace")
    status_line, _, rest = reply.partition("\r\n")
    return Answer(int(status_line.split()[1]), rest)


def keyless_body(target: Target) -> Answer:
    with httpx.Client(base_url=target.base_url, timeout=60) as http:
        response = http.post(f"/v1/{MODEL}", content=b" " * OVER_BODY_LIMIT_BYTES)
    return Answer(response.status_code, response.text)


def deep_json(target: Target) -> Answer:
    with target.client() as http:
        body = b'{"prompt": ' + b"[" * 500_000 + b"]" * 500_000 + b"}"
        response = http.post(f"/v1/{MODEL}", content=body, headers={"content-type": "application/json"})
    return Answer(response.status_code, response.text)


def reused_idempotency_key(target: Target) -> Answer:
    with target.client() as http:
        header = {"Idempotency-Key": f"adversarial-{time.time_ns()}"}
        first = http.post(f"/v1/{MODEL}", json=QUICK_JOB, headers=header)
        assert first.status_code == 200, first.text
        second = http.post(f"/v1/{MODEL}", json={**QUICK_JOB, "prompt": "another body"}, headers=header)
    return Answer(second.status_code, second.text)


def wait_ready(http: httpx.Client, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = http.get("/v1/get_result", params={"id": job_id}).json()
        if result["status"] != "Pending":
            return result
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still Pending after {timeout_s} s")


def bombing_webhook(target: Target) -> Answer:
    """A job whose webhook receiver answers with a gzip bomb: the job is Ready, the reply barely read."""
    with target.client() as http:
        response = http.post(f"/v1/{MODEL}", json={**QUICK_JOB, "webhook_url": target.bombs.url("/hook")})
        if response.status_code != 200:
            return Answer(response.status_code, response.text)
        result = wait_ready(http, response.json()["id"])
        time.sleep(1.0)  # the delivery follows the final write
    return Answer(200 if result["status"] == "Ready" else 500, json.dumps(result))


def stream_flood(target: Target) -> Answer:
    """STREAMS_OPENED event streams of one slow job at once: the ones over the per-key cap get 429."""

    async def flood() -> list[int]:
        headers = {"x-key": target.key}
        async with httpx.AsyncClient(base_url=target.base_url, headers=headers, timeout=60) as http:
            job = (await http.post(f"/v1/{MODEL}", json=SLOW_JOB)).json()
            statuses: list[int] = []

            async def listen() -> None:
                async with http.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
                    statuses.append(response.status_code)
                    async for _ in response.aiter_bytes():
                        pass

            await asyncio.gather(*(listen() for _ in range(STREAMS_OPENED)), return_exceptions=True)
            return statuses

    statuses = asyncio.run(flood())
    refused = statuses.count(429) + statuses.count(503)
    wrong = [status for status in statuses if status not in (200, 429, 503)]
    status = 429 if refused >= STREAMS_OPENED - 64 and not wrong else (wrong or [200])[0]
    return Answer(status, f"{statuses.count(200)} streamed, {refused} refused, other: {wrong}")


ATTACKS = [
    Attack(
        "chunked-capital",
        "a body announced as `Transfer-Encoding: Chunked` (capital C), 33 MiB",
        chunked_capital,
        frozenset({400, 413}),
    ),
    Attack("keyless-body", "33 MiB sent without a key", keyless_body, frozenset({401, 413})),
    Attack(
        "gzip-bomb-url",
        "an image URL answering `Content-Encoding: gzip, gzip` (200 MiB inflated, 200 KB sent)",
        image_url("/gzip-bomb.png"),
        frozenset({422}),
        says="uncompressed",
    ),
    Attack(
        "pixel-bomb-url",
        "an image URL serving a 400-megapixel PNG of 50 KB",
        image_url("/pixel-bomb.png"),
        frozenset({422}),
    ),
    Attack(
        "pixel-bomb-inline",
        "the same 400-megapixel PNG inline (base64)",
        inline(lambda p: p.pixel_bomb),
        frozenset({422}),
    ),
    Attack(
        "scan-bomb-url",
        "an image URL serving a progressive JPEG with one scan repeated 1000 times",
        image_url("/scan-bomb.jpg"),
        frozenset({422}),
    ),
    Attack("scan-bomb-inline", "the same JPEG scan bomb inline", inline(lambda p: p.scan_bomb), frozenset({422})),
    Attack(
        "trickle-url",
        "an image URL sending one byte every half second",
        image_url("/trickle.png"),
        frozenset({422}),
        max_s=15.0,
    ),
    Attack(
        "redirect-to-private",
        "an image URL redirecting to a private address (10.1.2.3)",
        image_url("/to-private.png"),
        frozenset({422}),
        says="private address",
    ),
    Attack(
        "nat64-host",
        "an image URL whose host is a private IPv4 hidden in NAT64 (`[64:ff9b::a01:203]`)",
        lambda target: submit(target, input_image="http://[64:ff9b::a01:203]/x.png"),
        frozenset({422}),
        says="private address",
    ),
    Attack(
        "long-label-webhook",
        "a webhook host with a label over 63 characters",
        lambda target: submit(target, webhook_url=f"https://{'a' * 70}.example.com/hook"),
        frozenset({422}),
    ),
    Attack("deep-json", "JSON nested 500 000 deep (1 MB)", deep_json, frozenset({400, 422})),
    Attack("huge-prompt", "a 1 MB prompt", lambda target: submit(target, prompt="a" * 2**20), frozenset({422})),
    Attack(
        "reused-idempotency-key",
        "an `Idempotency-Key` reused with another body",
        reused_idempotency_key,
        frozenset({422}),
        says="Idempotency-Key",
    ),
    Attack(
        "bombing-webhook",
        "a webhook receiver answering with a gzip bomb",
        bombing_webhook,
        frozenset({200}),
        max_s=60.0,
    ),
    Attack(
        "stream-flood",
        f"{STREAMS_OPENED} event streams of one job from one key",
        stream_flood,
        frozenset({429}),
        max_s=120.0,
    ),
]


def ingress_rss_bytes() -> int:
    """The largest resident memory among the Ingress replicas of the Ray this process started (found by
    their process titles among its descendants, so another service on the machine is not counted)."""
    sizes = []
    for process in psutil.Process().children(recursive=True):
        try:
            if INGRESS_TITLE in " ".join(process.cmdline()):
                sizes.append(process.memory_info().rss)
        except psutil.Error:
            continue  # a worker that has just exited
    if not sizes:
        raise RuntimeError(f"no process titled {INGRESS_TITLE} started by this one: is the service running here?")
    return max(sizes)


@dataclass
class Outcome:
    attack: Attack
    answer: Answer
    ingress_growth_bytes: int

    @property
    def right(self) -> bool:
        text = self.answer.text
        return (
            self.answer.status in self.attack.statuses
            and self.answer.elapsed_s <= self.attack.max_s
            and self.attack.says in text
            and not any(leak in text for leak in self.attack.never_says)
        )


def replay(attack: Attack, target: Target) -> Outcome:
    """Send one attack; time it and read the ingress's memory before and after."""
    before = ingress_rss_bytes()
    started = time.perf_counter()
    answer = attack.send(target)
    answer.elapsed_s = time.perf_counter() - started
    return Outcome(attack, answer, ingress_rss_bytes() - before)
