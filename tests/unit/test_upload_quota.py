"""POST /v1/uploads goes through admission: uploads a minute per key (counted in the KeyLimiter every
ingress replica shares, apart from submits) and what a key keeps stored (count and bytes, listed from
storage, so every replica counts the same files); over either 429 with Retry-After and a message that
says which limit and what to do. No Ray: the limiter's handle is in-process."""

from __future__ import annotations

import asyncio
import io
from http import HTTPStatus
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from serve_apps.api.routers import uploads
from serve_apps.config import AppArgs
from serve_apps.jobs.references import InputResolver
from serve_apps.jobs.retention import DAY_S
from serve_apps.security.auth import ApiKeys, hash_key, key_id
from serve_apps.security.limits import KeyLimiter, OverLimit
from serve_apps.store.storage import JobStore
from tests.unit.test_overload import FakeHandle

KEY = "0123456789ab"


def png_bytes(side: int = 16, seed: int = 0) -> bytes:
    """A PNG of noise (it stays about 3 bytes a pixel when stored), `side` pixels square."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def shared_limiter(limiter: KeyLimiter) -> FakeHandle:
    """The limiter as each ingress replica calls it, through a handle."""

    async def admit_upload(key_id, uploads_per_minute):
        return limiter.admit_upload(key_id, uploads_per_minute)

    return FakeHandle(admit_upload=admit_upload)


def replica(tmp_path, **limits) -> InputResolver:
    """One ingress replica's resolver over the shared storage folder."""
    args = AppArgs(storage_url=str(tmp_path), limits=limits, jobs={"retention_days": 7})
    return InputResolver(JobStore(str(tmp_path)), args)


def stored_files(tmp_path) -> list[str]:
    return sorted(path.name for path in (tmp_path / "uploads" / KEY).glob("*.png"))


def test_the_upload_rate_is_per_key_counted_apart_from_submits_and_slides():
    limiter = KeyLimiter(concurrent_jobs=5, requests_per_minute=100, lease_s=60)
    assert limiter.admit_upload("k", 2, now=0) is None and limiter.admit_upload("k", 2, now=1) is None
    over = limiter.admit_upload("k", 2, now=2)
    assert over["status_code"] == HTTPStatus.TOO_MANY_REQUESTS and over["retry_after_s"] == 59
    assert "limits.uploads_per_minute_per_key" in over["reason"] and "send its id" in over["reason"]
    assert limiter.admit("k", "job", now=2) is None, "uploads do not use up the key's submits"
    assert limiter.admit_upload("other", 2, now=2) is None, "the rate is per key"
    assert limiter.admit_upload("k", 2, now=60.5) is None, "the minute window slides"


def test_two_replicas_share_one_upload_rate_through_the_limiter(tmp_path):
    limiter = shared_limiter(KeyLimiter(concurrent_jobs=5, requests_per_minute=100, lease_s=60))
    first, second = replica(tmp_path, uploads_per_minute_per_key=2), replica(tmp_path, uploads_per_minute_per_key=2)

    async def upload_three() -> None:
        await first.upload(KEY, png_bytes(), limiter)
        await second.upload(KEY, png_bytes(), limiter)
        with pytest.raises(OverLimit, match="2 uploads in a minute") as refused:
            await first.upload(KEY, png_bytes(), limiter)
        assert refused.value.status_code == HTTPStatus.TOO_MANY_REQUESTS and refused.value.retry_after_s >= 1

    asyncio.run(upload_three())
    assert len(stored_files(tmp_path)) == 2, "the refused upload was not stored"


def test_a_key_keeps_at_most_uploads_per_key_whichever_replica_stored_them(tmp_path):
    first, second = replica(tmp_path, uploads_per_key=2), replica(tmp_path, uploads_per_key=2)
    asyncio.run(first.upload(KEY, png_bytes()))
    asyncio.run(second.upload(KEY, png_bytes()))
    with pytest.raises(OverLimit) as refused:
        asyncio.run(first.upload(KEY, png_bytes()))
    message = str(refused.value)
    assert "already keeps 2 uploads" in message and "limits.uploads_per_key" in message
    assert "deleted 7 days after" in message and "upload ids you have" in message
    assert 6 * DAY_S < refused.value.retry_after_s <= 7 * DAY_S, "Retry-After: when the oldest upload goes"
    assert len(stored_files(tmp_path)) == 2
    assert asyncio.run(first.upload("ba9876543210", png_bytes())).id, "another key has its own quota"


def test_a_key_keeps_at_most_upload_bytes_per_key(tmp_path):
    resolver = replica(tmp_path, upload_bytes_per_key=2**20)
    asyncio.run(resolver.upload(KEY, png_bytes(side=500, seed=1)))  # about 0.72 MB stored
    with pytest.raises(OverLimit, match="limits.upload_bytes_per_key") as refused:
        asyncio.run(resolver.upload(KEY, png_bytes(side=500, seed=2)))
    assert "already take 0.7 MB of the 1.0 MB allowed" in str(refused.value)
    assert len(stored_files(tmp_path)) == 1
    assert asyncio.run(resolver.upload(KEY, png_bytes(side=64))).id, "a small one still fits"


def test_an_image_alone_over_the_bytes_a_key_may_keep_is_a_422_not_a_wait(tmp_path):
    from serve_apps.jobs.inputs import InputRejected

    resolver = replica(tmp_path, upload_bytes_per_key=2**20)
    with pytest.raises(InputRejected, match="send a smaller image"):
        asyncio.run(resolver.upload(KEY, png_bytes(side=700)))


def test_the_route_answers_429_with_retry_after_and_what_to_do(tmp_path):
    secret = "the-callers-key"
    caller = key_id(hash_key(secret))
    resolver = InputResolver(
        JobStore(str(tmp_path)), AppArgs(storage_url=str(tmp_path), limits={"uploads_per_minute_per_key": 1})
    )
    limiter = shared_limiter(KeyLimiter(concurrent_jobs=5, requests_per_minute=100, lease_s=60))
    app = FastAPI()
    app.state.services = SimpleNamespace(
        keys=ApiKeys({hash_key(secret)}),
        service=SimpleNamespace(inputs=resolver, submitter=SimpleNamespace(limiter=limiter)),
    )
    app.include_router(uploads.router)
    client = TestClient(app, headers={"x-key": secret})

    def post():
        return client.post("/v1/uploads", files={"file": ("red.png", png_bytes(), "image/png")})

    assert post().status_code == HTTPStatus.OK
    refused = post()
    assert refused.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert int(refused.headers["retry-after"]) >= 1
    detail = refused.json()["detail"]
    assert detail.startswith("Too many requests: more than 1 uploads in a minute") and "retry after" in detail
    assert len(list((tmp_path / "uploads" / caller).glob("*.png"))) == 1
