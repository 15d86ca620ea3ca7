"""Bodies over limits.max_body_bytes are refused before they are read, through Ray Serve's proxy."""

from __future__ import annotations

from http import HTTPStatus

import pytest

pytestmark = pytest.mark.serve
OVER_LIMIT_BYTES = 33 * 1024 * 1024  # the default limit is 32 MiB


def chunks(total_bytes: int, chunk_bytes: int = 1024 * 1024):
    for _ in range(total_bytes // chunk_bytes):
        yield b" " * chunk_bytes


def test_an_oversized_body_gets_413_and_a_keyless_one_401(client):
    declared = client.post("/v1/flux-2-klein-4b", content=b" " * OVER_LIMIT_BYTES)
    assert declared.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "limits.max_body_bytes" in declared.json()["detail"]
    streamed = client.post("/v1/images/generations", content=chunks(OVER_LIMIT_BYTES))
    assert streamed.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "limits.max_body_bytes" in streamed.json()["error"]["message"], "the OpenAI route answers in its shape"
    keyless = client.post("/v1/flux-2-klein-4b", content=b" " * OVER_LIMIT_BYTES, headers={"x-key": ""})
    assert keyless.status_code == HTTPStatus.UNAUTHORIZED
