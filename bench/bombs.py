"""A hostile image host on loopback: the payloads of the attack table, served over real HTTP.

Used by the adversarial suite (tests/adversarial) and `python -m bench.reliability --attacks`.
Every payload is built once, a megabyte at a time, so the server itself stays small.
"""

from __future__ import annotations

import gzip
import io
import struct
import threading
import time
import zlib
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

MEGABYTE = 2**20
GZIP_BOMB_MB = 200  # inflates to this many MiB; a few hundred bytes on the wire
PIXEL_BOMB_SIDE = 20_000  # 400 MP announced, 50 KB on the wire
SCAN_REPEATS = 1000
TRICKLE_BYTE_EVERY_S = 0.5


def gzip_of_gzip_bomb(megabytes: int = GZIP_BOMB_MB) -> bytes:
    """Zeros gzipped twice: the outer layer is tiny, the inner one inflates to `megabytes` MiB."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: with a gzip header
    zeros = bytes(MEGABYTE)
    layer = b"".join(inner.compress(zeros) for _ in range(megabytes)) + inner.flush()
    return gzip.compress(layer, 9)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pixel_bomb_png(side: int = PIXEL_BOMB_SIDE) -> bytes:
    """A valid 1-bit PNG of side x side black pixels: the header announces hundreds of megapixels."""
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def scan_bomb_jpeg(repeats: int = SCAN_REPEATS) -> bytes:
    """A progressive JPEG with its smallest scan repeated: each copy a few dozen bytes, each a decoding pass."""
    y, x = np.mgrid[0:256, 0:256]
    smooth = Image.fromarray(np.stack([x, y, (x + y) // 2], -1).astype(np.uint8))
    out = io.BytesIO()
    smooth.save(out, "JPEG", progressive=True, quality=90)
    data = out.getvalue()
    end = data.rindex(b"\xff\xd9")
    starts = [at for at in range(len(data) - 1) if data[at : at + 2] == b"\xff\xda"]
    start, stop = min(zip(starts, [*starts[1:], end]), key=lambda scan: scan[1] - scan[0])
    return data[:end] + data[start:stop] * repeats + data[end:]


def small_png(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(out, "PNG")
    return out.getvalue()


class Payloads:
    """Each payload built on first use and kept (the server answers many attacks)."""

    @cached_property
    def gzip_bomb(self) -> bytes:
        return gzip_of_gzip_bomb()

    @cached_property
    def pixel_bomb(self) -> bytes:
        return pixel_bomb_png()

    @cached_property
    def scan_bomb(self) -> bytes:
        return scan_bomb_jpeg()

    @cached_property
    def small(self) -> bytes:
        return small_png()


class BombHandler(BaseHTTPRequestHandler):
    payloads: Payloads  # set on the class the server makes

    def log_message(self, format, *args) -> None:  # noqa: A002  the server is quiet
        pass

    def reply(self, body: bytes, content_type: str = "image/png", **headers: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        routes = {
            "/gzip-bomb.png": lambda: self.reply(self.payloads.gzip_bomb, Content_Encoding="gzip, gzip"),
            "/pixel-bomb.png": lambda: self.reply(self.payloads.pixel_bomb),
            "/scan-bomb.jpg": lambda: self.reply(self.payloads.scan_bomb, "image/jpeg"),
            "/ok.png": lambda: self.reply(self.payloads.small),
            "/trickle.png": self.trickle,
            "/to-private.png": self.redirect_to_private,
        }
        routes.get(self.path, lambda: self.send_error(404))()

    def do_POST(self) -> None:
        """A webhook receiver answering every delivery with a gzip bomb."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.reply(self.payloads.gzip_bomb, "application/json", Content_Encoding="gzip, gzip")

    def trickle(self) -> None:
        """Announces a 1 MB PNG, then sends a byte every half second."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(MEGABYTE))
        self.end_headers()
        try:
            for _ in range(120):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(TRICKLE_BYTE_EVERY_S)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the service gave up on us, as it should

    def redirect_to_private(self) -> None:
        self.send_response(302)
        self.send_header("Location", "http://10.1.2.3/inside.png")
        self.send_header("Content-Length", "0")
        self.end_headers()


class BombServer:
    """The hostile host on 127.0.0.1 and a free port, in a thread; a context manager."""

    def __init__(self):
        self.payloads = Payloads()
        handler = type("Handler", (BombHandler,), {"payloads": self.payloads})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> BombServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
