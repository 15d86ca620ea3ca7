"""The ingress decodes the same input bytes once (serve_apps/jobs/decoded_inputs.py): a reference sent with job after
job is found by its digest; other bytes, or the same bytes read as a mask, are decoded anew; memory stays bounded."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
from PIL import Image

from serve_apps.api.protocol import GenerateRequest
from serve_apps.config import AppArgs
from serve_apps.jobs.decoded_inputs import DecodedInputs, entry_bytes, input_key
from serve_apps.jobs.inputs import decode_image
from serve_apps.jobs.references import InputResolver
from serve_apps.store.storage import JobStore

KEY_ID = "0123456789ab"


def photo(seed: int, size=(48, 32)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def counting_decodes(monkeypatch) -> list[int]:
    calls = []

    def counted(data, field, max_pixels):
        calls.append(len(data))
        return decode_image(data, field, max_pixels)

    monkeypatch.setattr("serve_apps.jobs.references.decode_image", counted)
    return calls


def request(*images: bytes, mask: bytes | None = None) -> GenerateRequest:
    fields = {
        "input_image" if n == 0 else f"input_image_{n + 1}": base64.b64encode(i).decode() for n, i in enumerate(images)
    }
    if mask is not None:
        fields["mask"] = base64.b64encode(mask).decode()
    return GenerateRequest(prompt="make the background yellow", **fields)


def test_the_same_reference_bytes_are_decoded_once_and_give_the_same_input(tmp_path, monkeypatch):
    decodes = counting_decodes(monkeypatch)
    resolver = InputResolver(JobStore(str(tmp_path)), AppArgs(storage_url=str(tmp_path)))
    first = asyncio.run(resolver.resolve(request(photo(1), photo(2)), KEY_ID))
    again = asyncio.run(resolver.resolve(request(photo(1), photo(2)), KEY_ID))
    assert len(decodes) == 2, "the second job's references were decoded again"
    assert again.references == first.references and all(ref.sha256 for ref in again.references)
    other = asyncio.run(resolver.resolve(request(photo(3)), KEY_ID))
    assert len(decodes) == 3 and other.references[0].sha256 != first.references[0].sha256
    fresh = InputResolver(JobStore(str(tmp_path)), AppArgs(storage_url=str(tmp_path)))
    assert asyncio.run(fresh.resolve(request(photo(1), photo(2)), KEY_ID)).references == first.references


def test_the_same_bytes_as_a_mask_are_read_as_a_mask(tmp_path, monkeypatch):
    resolver = InputResolver(JobStore(str(tmp_path)), AppArgs(storage_url=str(tmp_path)))
    image = photo(4)
    resolved = asyncio.run(resolver.resolve(request(image, mask=image), KEY_ID))
    assert resolved.mask.sha256 != resolved.references[0].sha256, "a mask is stored greyscale, not as the photo"


def test_a_cache_of_no_bytes_decodes_every_time(tmp_path, monkeypatch):
    decodes = counting_decodes(monkeypatch)
    args = AppArgs(storage_url=str(tmp_path), inputs={"decoded_cache_bytes": 0})
    resolver = InputResolver(JobStore(str(tmp_path)), args)
    for _ in range(2):
        asyncio.run(resolver.resolve(request(photo(5)), KEY_ID))
    assert len(decodes) == 2


def test_the_cache_keeps_the_most_recent_within_its_bytes():
    decoded = {seed: decode_image(photo(seed), "input_image", 1 << 20) for seed in range(4)}
    size = entry_bytes(decoded[0])
    cache = DecodedInputs(max_bytes=2 * size)
    keys = {seed: input_key(photo(seed), False, 1 << 20) for seed in range(4)}
    for seed in (0, 1):
        cache.put(keys[seed], decoded[seed])
    assert cache.get(keys[0]) is decoded[0]  # 0 is now the most recent
    cache.put(keys[2], decoded[2])
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is decoded[0] and cache.get(keys[2]) is decoded[2]
    assert cache.held_bytes <= 2 * size
    too_big = DecodedInputs(max_bytes=size - 1)
    too_big.put(keys[3], decoded[3])
    assert too_big.get(keys[3]) is None and too_big.held_bytes == 0
