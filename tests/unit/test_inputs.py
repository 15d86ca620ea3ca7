"""Input images: sources told apart, fetched only from public addresses, decoded safely. No Ray, no model."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import struct
import zlib

import httpx
import pytest
from PIL import Image

from serve_apps.config import InputArgs
from serve_apps.jobs.inputs import InputRejected, decode_image, decode_mask, fetch_image, parse_source

LIMITS = InputArgs(max_bytes=64 * 1024, timeout_s=2, max_redirects=2, max_pixels=4096 * 4096)
LOOPBACK_ALLOWED = ["127.0.0.1"]


def png(size=(40, 20), color=(200, 30, 30), mode="RGB", **save) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def rejected(call, field: str) -> str:
    with pytest.raises(InputRejected) as caught:
        call()
    assert caught.value.field == field
    return caught.value.message


# -- sources ---------------------------------------------------------------------------------


def test_base64_bare_and_data_uri_decode_to_the_same_bytes():
    data = png()
    bare = parse_source("input_image", base64.b64encode(data).decode(), LIMITS.max_bytes)
    uri = parse_source("input_image", "data:image/png;base64," + base64.b64encode(data).decode(), LIMITS.max_bytes)
    assert bare.kind == uri.kind == "bytes" and bare.data == uri.data == data


def test_urls_and_upload_ids_are_told_apart():
    assert parse_source("input_image", "https://example.com/a.png", LIMITS.max_bytes).kind == "url"
    upload = parse_source("input_image_2", "upload_" + "a" * 32, LIMITS.max_bytes)
    assert (upload.kind, upload.upload_id) == ("upload", "upload_" + "a" * 32)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://example.com/"])
def test_other_schemes_are_refused(url):
    assert "not fetched" in rejected(lambda: parse_source("input_image_3", url, LIMITS.max_bytes), "input_image_3")


def test_garbage_is_neither_base64_nor_url():
    message = rejected(lambda: parse_source("input_image", "not an image!", LIMITS.max_bytes), "input_image")
    assert "base64" in message and "URL" in message


def test_base64_over_the_cap_is_refused_before_decoding():
    too_long = "A" * (LIMITS.max_bytes * 2)
    assert "MB" in rejected(lambda: parse_source("input_image", too_long, LIMITS.max_bytes), "input_image")


# -- decoding ---------------------------------------------------------------------------------


def test_alpha_is_flattened_onto_white_and_stored_as_rgb_png():
    decoded = decode_image(png(color=(255, 0, 0, 0), mode="RGBA"), "input_image", LIMITS.max_pixels)
    assert decoded.image.mode == "RGB" and decoded.image.getpixel((3, 3)) == (255, 255, 255)
    assert Image.open(io.BytesIO(decoded.png)).format == "PNG" and len(decoded.sha256) == 64


def test_exif_rotation_is_applied():
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.new("RGB", (40, 20), (10, 200, 10)).save(buffer, format="JPEG", exif=exif)
    decoded = decode_image(buffer.getvalue(), "input_image", LIMITS.max_pixels)
    assert (decoded.width, decoded.height) == (20, 40)


def test_not_an_image_names_the_field():
    assert "not an image" in rejected(
        lambda: decode_image(b"hello", "input_image_2", LIMITS.max_pixels), "input_image_2"
    )


def test_unsupported_format_names_it():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    assert "GIF" in rejected(lambda: decode_image(buffer.getvalue(), "input_image", LIMITS.max_pixels), "input_image")


def test_truncated_file_is_refused():
    noisy = Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3))  # incompressible: cut means missing rows
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    data = buffer.getvalue()
    message = rejected(lambda: decode_image(data[: len(data) // 2], "input_image", LIMITS.max_pixels), "input_image")
    assert "truncated" in message


def bomb_png(width: int, height: int) -> bytes:
    """A tiny file whose header declares a huge image (the pixel data never needs to exist)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [5000, 60000])
def test_decompression_bomb_is_refused_from_its_header(side):
    message = rejected(lambda: decode_image(bomb_png(side, side), "input_image", LIMITS.max_pixels), "input_image")
    assert "megapixels" in message


def test_large_images_are_stored_at_most_four_megapixels():
    decoded = decode_image(png(size=(4000, 2000)), "input_image", 10_000_000)
    assert decoded.width * decoded.height <= 2048 * 2048 and abs(decoded.width / decoded.height - 2) < 0.01


def test_mask_transparent_is_repainted_else_white_is():
    transparent_hole = Image.new("RGBA", (16, 16), (0, 0, 0, 255))
    transparent_hole.paste((0, 0, 0, 0), (0, 0, 8, 16))
    buffer = io.BytesIO()
    transparent_hole.save(buffer, format="PNG")
    mask = decode_mask(buffer.getvalue(), "mask", LIMITS.max_pixels).image
    assert mask.mode == "L" and mask.getpixel((2, 2)) == 255 and mask.getpixel((12, 2)) == 0
    white = decode_mask(png(size=(16, 16), color=(255, 255, 255)), "mask", LIMITS.max_pixels).image
    assert white.getpixel((2, 2)) == 255


# -- fetching ---------------------------------------------------------------------------------


def fetch(url: str, handler=None, allowed=LOOPBACK_ALLOWED, limits=LIMITS) -> bytes:
    transport = httpx.MockTransport(handler) if handler else None
    return asyncio.run(fetch_image(url, "input_image", limits, allowed, transport=transport))


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/a.png",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost/a.png",
        "http://[::1]/a.png",
    ],
)
def test_private_loopback_link_local_and_metadata_hosts_are_refused(url):
    assert "address" in rejected(lambda: fetch(url, allowed=[]), "input_image")


def test_only_the_allowed_loopback_address_passes():
    assert "loopback" in rejected(lambda: fetch("http://127.0.0.2:9/a.png"), "input_image")


def test_a_redirect_to_a_private_address_is_refused():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data"})

    assert "169.254.169.254" in rejected(lambda: fetch("http://127.0.0.1:9/a.png", handler), "input_image")


def test_redirects_are_followed_within_the_limit():
    hops = []

    def handler(request: httpx.Request) -> httpx.Response:
        hops.append(request.url.path)
        if request.url.path == "/final.png":
            return httpx.Response(200, content=png())
        return httpx.Response(302, headers={"location": "/final.png"})

    assert fetch("http://127.0.0.1:9/start", handler) == png() and hops == ["/start", "/final.png"]

    def loop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "/again"})

    assert "redirects more than" in rejected(lambda: fetch("http://127.0.0.1:9/start", loop), "input_image")


def test_size_cap_while_streaming_and_by_content_length():
    def streamed(request: httpx.Request) -> httpx.Response:
        async def body():
            for _ in range(100):
                yield b"x" * 1024

        return httpx.Response(200, content=body())  # no Content-Length

    assert "MB" in rejected(lambda: fetch("http://127.0.0.1:9/big", streamed), "input_image")

    def declared(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": str(10**9)}, content=b"")

    assert "MB" in rejected(lambda: fetch("http://127.0.0.1:9/big", declared), "input_image")


def test_download_timeout():
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, content=png())

    limits = InputArgs(timeout_s=0.2)
    assert "0.2 s" in rejected(lambda: fetch("http://127.0.0.1:9/slow", slow, limits=limits), "input_image")


def test_http_error_status_is_named():
    def missing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    assert "HTTP 404" in rejected(lambda: fetch("http://127.0.0.1:9/none", missing), "input_image")


@pytest.mark.parametrize("url", ["http://[::1/a.png", "http://example.com:99999/a.png"])
def test_malformed_urls_are_a_422_not_a_crash(url):
    assert "malformed" in rejected(lambda: fetch(url), "input_image")


def test_the_connection_goes_to_the_checked_address_with_the_host_kept():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers["host"]))
        return httpx.Response(200, content=png())

    assert fetch("http://localhost:9/a.png", handler) == png()
    assert seen == [("127.0.0.1", "localhost:9")], "pinned: a DNS answer changing after the check is not used"
