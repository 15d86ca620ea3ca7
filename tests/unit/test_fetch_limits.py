"""Image URLs are read as sent: a compressed body (a gzip-of-gzip bomb) is refused, never decoded; an IDN host
is fetched under its punycode name. No network: httpx.MockTransport, DNS answered by the test."""

from __future__ import annotations

import asyncio
import gzip
import io
import socket
import time
import tracemalloc
import zlib

import httpx
import pytest
from PIL import Image

from serve_apps.config import InputArgs
from serve_apps.jobs.inputs import InputRejected, fetch_image

LIMITS = InputArgs(max_bytes=64 * 1024, timeout_s=5, max_redirects=2, max_pixels=4096 * 4096)
ZEROS_MB = 100


def gzip_of_gzip_bomb() -> bytes:
    """100 MB of zeros gzipped twice, built a megabyte at a time: a few hundred bytes on the wire."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip header
    megabyte = bytes(2**20)
    layer = b"".join(inner.compress(megabyte) for _ in range(ZEROS_MB)) + inner.flush()
    return gzip.compress(layer, 9)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


async def streamed(data: bytes):
    """A body as a server sends it: a stream (a `content=` bytes body httpx would read, and decode, at once)."""
    yield data


def fetch(url: str, handler, allowed=("127.0.0.1",)) -> bytes:
    transport = httpx.MockTransport(handler)
    return asyncio.run(fetch_image(url, "input_image", LIMITS, list(allowed), transport=transport))


def rejected(call) -> str:
    with pytest.raises(InputRejected) as caught:
        call()
    assert caught.value.field == "input_image"
    return caught.value.message


def test_a_gzip_of_gzip_bomb_is_refused_quickly_without_being_decoded():
    bomb = gzip_of_gzip_bomb()
    assert len(bomb) < 2048
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("accept-encoding", ""))
        return httpx.Response(
            200, headers={"content-type": "image/png", "content-encoding": "gzip, gzip"}, content=streamed(bomb)
        )

    tracemalloc.start()
    started = time.perf_counter()
    try:
        message = rejected(lambda: fetch("http://127.0.0.1:9/a.png", handler))
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "sent a compressed image (Content-Encoding: gzip, gzip); serve it uncompressed" in message
    assert "127.0.0.1" in message
    assert asked == ["identity"], "the request asks for the body uncompressed"
    assert peak_bytes < 8 * 2**20, f"{peak_bytes / 2**20:.0f} MiB traced: the bomb was decoded"
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-custom"])
def test_any_content_encoding_but_identity_is_refused(encoding):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-encoding": encoding}, content=streamed(b"\x1f\x8b not really"))

    assert f"(Content-Encoding: {encoding})" in rejected(lambda: fetch("http://127.0.0.1:9/a.png", handler))


@pytest.mark.parametrize("encoding", [None, "identity", " Identity "])
def test_an_uncompressed_body_is_read_as_sent(encoding):
    data = png()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-encoding": encoding} if encoding else {}, content=streamed(data))

    assert fetch("http://127.0.0.1:9/a.png", handler) == data


def test_the_cap_counts_the_bytes_read_not_a_decoded_size():
    """A raw body over the cap, streamed without a Content-Length, stops at the cap."""
    sent: list[int] = []

    async def body():
        for _ in range(1000):
            sent.append(1)
            yield bytes(16 * 1024)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    assert "larger than" in rejected(lambda: fetch("http://127.0.0.1:9/a.png", handler))
    assert len(sent) <= LIMITS.max_bytes // (16 * 1024) + 1


@pytest.fixture
def dns_to_loopback(monkeypatch):
    asked: list[str] = []

    def dns(host, port, *args, **kwargs):
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", dns)
    return asked


def test_an_idn_host_is_fetched_under_its_punycode_name(dns_to_loopback):
    data = png()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=streamed(data))

    assert fetch("http://bücher.example/x.png", handler) == data
    assert dns_to_loopback == ["xn--bcher-kva.example"]
    assert seen[0].headers["host"] == "xn--bcher-kva.example"
    assert seen[0].url.host == "127.0.0.1", "still pinned to the checked address"


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("ü" * 64 + ".example", "host label over 63 characters|not a valid international domain name"),
        ("a" * 64 + ".example", "host label over 63 characters"),
        ("bad\u200dzwj.example", "not a valid international domain name"),
    ],
)
def test_a_host_that_cannot_be_encoded_is_a_clear_refusal(dns_to_loopback, host, message):
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("never sent")

    assert pytest.importorskip("re").search(message, rejected(lambda: fetch(f"http://{host}/x.png", handler)))
