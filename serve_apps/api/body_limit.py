"""Request bodies limited before they are read: a pure ASGI middleware.

Nothing of a body is read until the caller's key is known to be valid, so a stranger cannot make
a replica take in 32 MB; then a Content-Length over `max_body_bytes` is refused at once, and every
body is counted as it streams and refused as soon as it passes the limit, whatever its headers say
(no Content-Length, Transfer-Encoding in any spelling or list). A request that announces no body (no
Content-Length or 0, no Transfer-Encoding) is passed on without a key check, and should a body come
anyway, the key is checked before its first bytes reach the app. The
refusals are raised as HTTPExceptions from `receive`, inside the route, so the app's own handlers
answer them in the route's error shape (OpenAI's on the OpenAI routes).
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_apps.jobs.executors import KEY_CHECKS, run_in


def too_large(max_body_bytes: int) -> HTTPException:
    return HTTPException(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"The request body is larger than this server accepts ({max_body_bytes / 2**20:g} MiB, limits.max_body_bytes); "
        "send images as URLs or uploads (POST /v1/uploads) rather than inline, or make them smaller.",
    )


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int, check_key: Callable[[Headers], object]):
        """`check_key(headers)` raises an HTTPException (401) for a missing or invalid key."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.check_key = check_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        # A body is announced by a Content-Length above 0 or any Transfer-Encoding (chunked, Chunked, gzip, chunked).
        announced = declared not in (None, "0") or "transfer-encoding" in headers
        checked = False
        received_bytes = 0

        async def check_once() -> None:
            nonlocal checked
            if not checked:
                checked = True
                await run_in(KEY_CHECKS, self.check_key, headers)  # database lookups, in the key checks' own pool
                if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                    raise too_large(self.max_body_bytes)

        async def limited_receive() -> Message:
            nonlocal received_bytes
            if announced:
                await check_once()
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                if body:
                    await check_once()  # unannounced bytes: no key, no body
                received_bytes += len(body)
                if received_bytes > self.max_body_bytes:
                    raise too_large(self.max_body_bytes)
            return message

        await self.app(scope, limited_receive, send)
