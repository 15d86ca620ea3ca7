"""Decoding input images: JPEG scan bombs refused before decoding, decodes in a pool of their own, 16-bit
greyscale and tRNS colour keys made 8-bit RGB (images) or L (masks) correctly. No Ray, no model."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from serve_apps.config import AppArgs, InputArgs
from serve_apps.jobs.decoding import decode_in_pool
from serve_apps.jobs.inputs import MAX_JPEG_SCANS, InputRejected, decode_image, decode_mask, jpeg_scans
from serve_apps.jobs.references import InputResolver
from serve_apps.store.storage import JobStore

MAX_PIXELS = InputArgs().max_pixels


def noise(size=(256, 256)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def jpeg(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **save)
    return buffer.getvalue()


def encoded(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def scan_bomb(repeats: int) -> bytes:
    """A progressive JPEG with its smallest scan repeated: each copy a few dozen bytes, each a pass to decode."""
    y, x = np.mgrid[0:256, 0:256]
    smooth = Image.fromarray(np.stack([x, y, (x + y) // 2], -1).astype(np.uint8))
    data = jpeg(smooth, progressive=True, quality=90)
    end = data.rindex(b"\xff\xd9")
    starts = [at for at in range(len(data) - 1) if data[at : at + 2] == b"\xff\xda"]
    start, stop = min(zip(starts, [*starts[1:], end]), key=lambda scan: scan[1] - scan[0])
    return data[:end] + data[start:stop] * repeats + data[end:]


# -- item 3: JPEG scan bombs -----------------------------------------------------------------------


def test_jpeg_scans_are_counted_by_walking_the_markers():
    progressive = jpeg(noise(), progressive=True)
    assert jpeg_scans(progressive) == progressive.count(b"\xff\xda") > 1
    restarts = jpeg(noise(), restart_marker_blocks=1)  # entropy data full of FFD0-D7 and FF00 stuffing
    assert restarts.count(b"\xff\x00") > 0 and jpeg_scans(restarts) == 1
    comment = jpeg(noise(), comment=b"\xff\xda" * 50)  # SOS bytes inside a segment are not scans
    assert jpeg_scans(comment) == 1


def test_a_jpeg_with_a_scan_repeated_a_thousand_times_is_refused_fast():
    bomb = scan_bomb(1000)
    assert len(bomb) < 100 * 1024 and jpeg_scans(bomb) > 1000
    started = time.perf_counter()
    with pytest.raises(InputRejected) as caught:
        decode_image(bomb, "input_image", MAX_PIXELS)
    assert time.perf_counter() - started < 1.0
    assert caught.value.field == "input_image"
    assert f"at most {MAX_JPEG_SCANS}" in caught.value.message and "baseline JPEG or PNG" in caught.value.message
    with pytest.raises(InputRejected):
        decode_mask(bomb, "mask", MAX_PIXELS)


def test_ordinary_progressive_and_restart_jpegs_still_decode():
    for data in (jpeg(noise(), progressive=True), jpeg(noise(), restart_marker_blocks=1), scan_bomb(50)):
        assert decode_image(data, "input_image", MAX_PIXELS).image.size == (256, 256)


def test_decoding_runs_in_its_own_pool_not_the_default_executor(tmp_path, monkeypatch):
    threads = []

    def recording(data, field, max_pixels):
        threads.append(threading.current_thread().name)
        return decode_image(data, field, max_pixels)

    monkeypatch.setattr("serve_apps.jobs.references.decode_image", recording)
    args = AppArgs(storage_url=str(tmp_path))
    resolver = InputResolver(JobStore(str(tmp_path)), args)
    upload = asyncio.run(resolver.upload("0123456789ab", encoded(noise((32, 32)))))
    assert (upload.width, upload.height) == (32, 32)
    assert threads and all(name.startswith("decode") for name in threads)
    decoded = asyncio.run(decode_in_pool(decode_image, encoded(noise((8, 8))), "input_image", MAX_PIXELS))
    assert decoded.image.size == (8, 8)


# -- item 11: 16-bit greyscale and tRNS colour keys --------------------------------------------------


def grey16(value: int, size=(16, 16), **save) -> bytes:
    image = Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint16))
    assert image.mode == "I;16"
    return encoded(image, **save)


def test_a_dark_16_bit_grey_png_stays_dark_as_an_image():
    decoded = decode_image(grey16(0x3000), "input_image", MAX_PIXELS).image
    assert decoded.mode == "RGB" and decoded.getpixel((3, 3)) == (0x30, 0x30, 0x30)
    assert decode_image(grey16(0xFFFF), "input_image", MAX_PIXELS).image.getpixel((3, 3)) == (255, 255, 255)


def test_a_dark_16_bit_grey_mask_stays_dark():
    mask = decode_mask(grey16(0x3000), "mask", MAX_PIXELS).image
    assert mask.mode == "L" and mask.getpixel((3, 3)) == 0x30


@pytest.mark.parametrize(
    "data",
    [
        encoded(Image.new("L", (16, 16), 0)),
        encoded(Image.new("RGB", (16, 16), (0, 0, 0))),
        grey16(0),
        grey16(0x00FF),  # dark in 16 bits, though its low byte is 255
        encoded(Image.new("RGBA", (16, 16), (0, 0, 0, 255))),  # opaque: white is edited, black is kept
    ],
    ids=["8-bit", "rgb", "16-bit", "16-bit-dark", "opaque-alpha"],
)
def test_an_all_black_mask_repaints_nothing(data):
    assert decode_mask(data, "mask", MAX_PIXELS).image.getextrema() == (0, 0)


def test_a_16_bit_mask_with_a_trns_key_repaints_the_transparent_pixels():
    array = np.full((16, 16), 0x1000, dtype=np.uint16)
    array[:, :8] = 0x1234  # the colour key: transparent, so repainted (OpenAI's convention)
    mask = decode_mask(encoded(Image.fromarray(array), transparency=0x1234), "mask", MAX_PIXELS).image
    assert mask.getpixel((2, 2)) == 255 and mask.getpixel((12, 2)) == 0


def test_trns_colour_keys_are_flattened_onto_white():
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([10, 20, 30, 200, 0, 0])
    palette.paste(0, (0, 0, 8, 16))
    decoded = decode_image(encoded(palette, transparency=0), "input_image", MAX_PIXELS).image
    assert decoded.getpixel((2, 2)) == (255, 255, 255) and decoded.getpixel((12, 2)) == (200, 0, 0)
    rgb = Image.new("RGB", (16, 16), (1, 2, 3))
    rgb.paste((90, 90, 90), (8, 0, 16, 16))
    decoded = decode_image(encoded(rgb, transparency=(1, 2, 3)), "input_image", MAX_PIXELS).image
    assert decoded.getpixel((2, 2)) == (255, 255, 255) and decoded.getpixel((12, 2)) == (90, 90, 90)
    grey = Image.new("L", (16, 16), 50)
    grey.paste(120, (8, 0, 16, 16))
    decoded = decode_image(encoded(grey, transparency=50), "input_image", MAX_PIXELS).image
    assert decoded.getpixel((2, 2)) == (255, 255, 255) and decoded.getpixel((12, 2)) == (120, 120, 120)
    key16 = np.full((16, 16), 0x8000, dtype=np.uint16)
    key16[:, :8] = 0x1234
    decoded = decode_image(encoded(Image.fromarray(key16), transparency=0x1234), "input_image", MAX_PIXELS).image
    assert decoded.getpixel((2, 2)) == (255, 255, 255) and decoded.getpixel((12, 2)) == (128, 128, 128)
