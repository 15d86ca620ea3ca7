"""The body size limit and the key check run before a body is read (no Ray)."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from serve_apps.api.body_limit import BodySizeLimit
from serve_apps.api.routers import openai
from serve_apps.api.routers.deps import check_key
from serve_apps.security.auth import ApiKeys, hash_key

KEY = "body-key"
LIMIT_BYTES = 1024


@pytest.fixture
def reads() -> list[int]:
    return []


@pytest.fixture
def client(reads):
    keys = ApiKeys({hash_key(KEY)})
    app = FastAPI(exception_handlers=openai.EXCEPTION_HANDLERS)
    app.add_middleware(BodySizeLimit, max_body_bytes=LIMIT_BYTES, check_key=lambda headers: check_key(headers, keys))

    def require(request: Request) -> str:
        return check_key(request.headers, keys)

    async def read(request: Request) -> dict:
        body = await request.body()
        reads.append(len(body))
        return {"bytes": len(body)}

    async def route(request: Request, _key: str = Depends(require)) -> dict:
        return await read(request)

    app.post("/v1/echo")(route)
    app.post(openai.OPENAI_PATHS[0])(route)
    app.get("/open")(lambda: {"ok": True})
    return Client(app)


class Client:
    """Synchronous calls into the ASGI app, so streamed (chunked) bodies reach it as they would over HTTP."""

    def __init__(self, app):
        self.app = app

    def request(self, method: str, path: str, **options) -> httpx.Response:
        async def call():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test") as http:
                return await http.request(method, path, **options)

        return asyncio.run(call())

    def post(self, path: str, **options) -> httpx.Response:
        return self.request("POST", path, **options)

    def get(self, path: str, **options) -> httpx.Response:
        return self.request("GET", path, **options)


async def chunks(count: int, size: int = 256):
    for _ in range(count):
        yield b"x" * size


def test_bodies_within_the_limit_pass(client, reads):
    response = client.post("/v1/echo", content=b"x" * LIMIT_BYTES, headers={"x-key": KEY})
    assert response.status_code == HTTPStatus.OK and response.json() == {"bytes": LIMIT_BYTES}
    assert client.get("/open").status_code == HTTPStatus.OK, "no body, no key check here"


def test_a_declared_length_over_the_limit_is_refused_unread(client, reads):
    response = client.post("/v1/echo", content=b"x" * (LIMIT_BYTES + 1), headers={"x-key": KEY})
    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "limits.max_body_bytes" in response.json()["detail"]
    assert reads == []


def test_a_streamed_body_is_refused_when_it_passes_the_limit(client, reads):
    response = client.post("/v1/echo", content=chunks(8), headers={"x-key": KEY})
    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert reads == []


def test_the_key_is_checked_before_the_body(client, reads):
    response = client.post("/v1/echo", content=b"x" * (LIMIT_BYTES + 1), headers={"x-key": "wrong"})
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert reads == []


def test_openai_route_refuses_in_openai_shape(client):
    response = client.post(openai.OPENAI_PATHS[0], content=chunks(8), headers={"authorization": f"Bearer {KEY}"})
    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert response.json()["error"]["code"] == HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def test_check_key_names_both_headers():
    with pytest.raises(HTTPException) as refused:
        check_key(Headers({}), ApiKeys({hash_key(KEY)}))
    assert "x-key" in refused.value.detail


@pytest.mark.parametrize("spelling", ["Chunked", "CHUNKED", "gzip, chunked", "chunked"])
def test_a_streamed_body_is_limited_whatever_the_transfer_encoding_spelling(client, reads, spelling):
    response = client.post("/v1/echo", content=chunks(8), headers={"x-key": KEY, "transfer-encoding": spelling})
    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE, response.text
    assert "limits.max_body_bytes" in response.json()["detail"]
    assert reads == []


def test_a_body_that_no_header_announces_is_limited_and_needs_the_key():
    """No Content-Length, no Transfer-Encoding, and a body all the same (a server that passes one on)."""
    seen: list[int] = []

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append(len(body))

    def refused(key: str) -> HTTPException:
        async def run():
            chunk = {"type": "http.request", "body": b"x" * 600, "more_body": True}
            messages = iter([chunk, chunk, {"type": "http.request", "body": b"", "more_body": False}])
            limited = BodySizeLimit(
                app, max_body_bytes=LIMIT_BYTES, check_key=lambda headers: check_key(headers, ApiKeys({hash_key(KEY)}))
            )
            scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"x-key", key.encode())]}
            await limited(scope, lambda: asyncio.sleep(0, next(messages)), None)

        with pytest.raises(HTTPException) as error:
            asyncio.run(run())
        return error.value

    assert refused(KEY).status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert refused("wrong").status_code == HTTPStatus.UNAUTHORIZED
    assert seen == []
