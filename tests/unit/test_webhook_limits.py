"""A webhook receiver's reply costs neither time nor memory: one deadline per attempt, at most 1 KiB of the reply
read, raw. Each receiver is a raw socket on loopback that answers as scripted."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
import tracemalloc
import zlib

import pytest

from serve_apps.jobs.webhooks import deliver

LOOPBACK = ["127.0.0.1"]


class Receiver:
    """Accepts connections on loopback, reads each request's head and body, then runs `reply(connection)`."""

    def __init__(self, reply):
        self.reply = reply
        self.sent_bytes = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection):
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(
                next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
            )
            while len(body) < length:
                body += connection.recv(65536)
            try:
                self.reply(self, connection)
            except OSError:
                pass  # the client hung up: what these tests want

    def send(self, connection, data: bytes):
        connection.sendall(data)
        self.sent_bytes += len(data)

    def close(self):
        self.listener.close()


@pytest.fixture
def receiver():
    made = []

    def make(reply):
        made.append(Receiver(reply))
        return made[-1]

    yield make
    for each in made:
        each.close()


def run(url: str, timeout_s: float, attempts: list[dict]) -> bool:
    async def record(attempt):
        attempts.append(attempt)

    return asyncio.run(deliver(url, {"id": "j"}, "s3cret", "j", 1, 0.01, timeout_s, LOOPBACK, on_attempt=record))


def gzip_of_gzip_bomb(zeros_mb: int = 100) -> bytes:
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    layer = b"".join(inner.compress(bytes(2**20)) for _ in range(zeros_mb)) + inner.flush()
    return gzip.compress(layer, 9)


def test_a_gzip_bomb_reply_is_not_decoded(receiver):
    bomb = gzip_of_gzip_bomb()

    def reply(self, connection):
        head = f"HTTP/1.1 200 OK\r\ncontent-encoding: gzip, gzip\r\ncontent-length: {len(bomb)}\r\n\r\n"
        self.send(connection, head.encode() + bomb)

    url = receiver(reply).url
    attempts: list[dict] = []
    tracemalloc.start()
    try:
        delivered = run(url, 5, attempts)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert delivered and attempts[0]["status_code"] == 200
    assert peak_bytes < 8 * 2**20, f"{peak_bytes / 2**20:.0f} MiB traced: the reply was decoded"


def test_a_large_reply_is_not_read_past_a_kibibyte(receiver):
    def reply(self, connection):
        self.send(connection, b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (200 * 2**20))
        for _ in range(200 * 16):
            self.send(connection, bytes(64 * 1024))

    server = receiver(reply)
    attempts: list[dict] = []
    assert run(server.url, 10, attempts)
    time.sleep(0.2)
    assert server.sent_bytes < 50 * 2**20, f"{server.sent_bytes / 2**20:.0f} MiB of the reply were read"


def test_a_trickled_answer_is_cut_at_one_deadline_for_the_whole_attempt(receiver):
    """Each byte arrives well within the timeout, so only a deadline for the whole attempt ends it."""

    def reply(self, connection):
        self.send(connection, b"HTTP/1.1 200 OK\r\nx-slow: ")
        for _ in range(40):
            self.send(connection, b"a")
            time.sleep(0.1)
        self.send(connection, b"\r\ncontent-length: 0\r\n\r\n")

    url = receiver(reply).url
    attempts: list[dict] = []
    started = time.perf_counter()
    delivered = run(url, 1, attempts)
    elapsed_s = time.perf_counter() - started
    assert not delivered and attempts[0]["error"] == "TimeoutError: the delivery failed"
    assert elapsed_s < 2.5, f"the attempt took {elapsed_s:.1f} s with timeout_s=1"


def test_a_trickled_body_after_a_2xx_status_still_counts_as_delivered(receiver):
    def reply(self, connection):
        self.send(connection, b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")

    def slow_body(self, connection):
        self.send(connection, b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
        for _ in range(40):
            self.send(connection, b"a")
            time.sleep(0.1)

    attempts: list[dict] = []
    assert run(receiver(reply).url, 1, attempts)
    started = time.perf_counter()
    assert run(receiver(slow_body).url, 1, attempts)
    assert time.perf_counter() - started < 2.5
    assert [attempt["status_code"] for attempt in attempts] == [204, 200]
