"""Fetching and decoding input images is shared fairly between keys: one key's burst of images takes at most
inputs.concurrent_images_per_key turns on an ingress replica, so another key's image still starts at once;
a turn that never comes is a 429 (the key's share) or 503 (the replica's), not a wait without end.
Slow fake fetches and decodes; no network, no Ray."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from http import HTTPStatus

import pytest
from PIL import Image

from serve_apps.api.protocol import GenerateRequest
from serve_apps.config import AppArgs
from serve_apps.jobs.decoding import InputTurns
from serve_apps.jobs.inputs import decode_image
from serve_apps.jobs.references import InputResolver
from serve_apps.security.limits import OverLimit
from serve_apps.store.storage import JobStore

KEY_A, KEY_B = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
SLOW_S = 0.4
PER_KEY, PER_REPLICA = 2, 4


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def requests_of(values: list[str]) -> list[GenerateRequest]:
    """`values` as input images, four to a request (inputs.max_references)."""
    fields = ("input_image", "input_image_2", "input_image_3", "input_image_4")
    return [
        GenerateRequest(prompt="edit", **dict(zip(fields, values[start : start + 4])))
        for start in range(0, len(values), 4)
    ]


async def key_b_waits_behind_key_a(resolver: InputResolver, a_values: list[str], b_value: str) -> float:
    """Seconds key B's one image takes while key A's images are all in flight (A's sent first)."""
    burst = [asyncio.create_task(resolver.resolve(request, KEY_A)) for request in requests_of(a_values)]
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await resolver.resolve(requests_of([b_value])[0], KEY_B)
    took_s = time.monotonic() - started
    await asyncio.gather(*burst)
    return took_s


@pytest.fixture
def resolver(tmp_path) -> InputResolver:
    args = AppArgs(
        storage_url=str(tmp_path),
        inputs={"concurrent_images_per_key": PER_KEY, "concurrent_images_per_replica": PER_REPLICA},
    )
    return InputResolver(JobStore(str(tmp_path)), args)


def test_ten_images_of_one_key_delay_another_keys_decode_by_at_most_one_decode(resolver, monkeypatch):
    decoded = decode_image(png_bytes(), "input_image", 10**6)

    def slow_decode(_data, _field, _max_pixels):
        time.sleep(SLOW_S)
        return decoded

    monkeypatch.setattr("serve_apps.jobs.references.decode_image", slow_decode)
    inline = base64.b64encode(png_bytes()).decode()
    took_s = asyncio.run(key_b_waits_behind_key_a(resolver, [inline] * 10, inline))
    assert took_s < 2 * SLOW_S, f"key B's one decode took {took_s:.2f} s behind key A's ten ({SLOW_S} s each)"


def test_one_key_fetches_at_most_its_share_at_once_and_another_keys_fetch_starts_at_once(resolver, monkeypatch):
    fetching = {KEY_A: 0, KEY_B: 0}
    most_at_once = {KEY_A: 0, KEY_B: 0, "all": 0}

    async def slow_fetch(url, _field, _limits, _allowed_private_hosts):
        key = KEY_A if "/a/" in url else KEY_B
        fetching[key] += 1
        most_at_once[key] = max(most_at_once[key], fetching[key])
        most_at_once["all"] = max(most_at_once["all"], sum(fetching.values()))
        await asyncio.sleep(SLOW_S)
        fetching[key] -= 1
        return png_bytes()

    monkeypatch.setattr("serve_apps.jobs.references.fetch_image", slow_fetch)
    a_urls = [f"https://images.example/a/{n}.png" for n in range(10)]
    took_s = asyncio.run(key_b_waits_behind_key_a(resolver, a_urls, "https://images.example/b/0.png"))
    assert most_at_once[KEY_A] == PER_KEY, "one key fetches at most inputs.concurrent_images_per_key at once"
    assert most_at_once["all"] <= PER_REPLICA
    assert took_s < 2 * SLOW_S, f"key B's one fetch took {took_s:.2f} s behind key A's ten ({SLOW_S} s each)"


def test_a_turn_that_does_not_come_in_time_is_429_for_the_keys_share_and_503_for_the_replicas():
    turns = InputTurns(per_key=1, per_replica=2)

    async def refusals() -> list[OverLimit]:
        found = []
        async with turns.turn(KEY_A, wait_s=1), turns.turn(KEY_B, wait_s=1):
            for key in (KEY_A, "cccccccccccc"):  # A is at its share; C's is free but the replica is full
                with pytest.raises(OverLimit) as refused:
                    async with turns.turn(key, wait_s=0.1):
                        pass
                found.append(refused.value)
        async with turns.turn(KEY_A, wait_s=0.1):  # given back: free again
            pass
        return found

    over_key, over_replica = asyncio.run(refusals())
    assert over_key.status_code == HTTPStatus.TOO_MANY_REQUESTS and over_key.retry_after_s >= 1
    assert "inputs.concurrent_images_per_key" in str(over_key) and "send fewer images" in str(over_key)
    assert over_replica.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert "inputs.concurrent_images_per_replica" in str(over_replica)
    assert turns.slots == {} and turns.users == {}, "a key's slots go once nobody holds or waits for them"


def test_a_free_turn_is_taken_even_with_no_time_left_to_wait():
    turns = InputTurns(per_key=1, per_replica=1)

    async def take() -> None:
        async with turns.turn(KEY_A, wait_s=0):
            pass

    asyncio.run(take())
