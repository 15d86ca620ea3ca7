"""Request bodies limited before they are read: a pure ASGI middleware.

Nothing of a body is read until the caller's key is known to be valid, so a stranger cannot make
a replica take in 32 MB; then a Content-Length over `max_body_bytes` is refused at once, and a body
without one (chunked) is counted as it streams and refused as soon as it passes the limit. The
refusals are raised as HTTPExceptions from `receive`, inside the route, so the app's own handlers
answer them in the route's error shape (OpenAI's on the OpenAI routes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
        if declared in (None, "0") and "chunked" not in headers.get("transfer-encoding", ""):
            return await self.app(scope, receive, send)  # no body: a GET, or a signed URL opened without a key
        checked = False
        received_bytes = 0

        async def limited_receive() -> Message:
            nonlocal checked, received_bytes
            if not checked:
                checked = True
                await asyncio.to_thread(self.check_key, headers)  # keys may be database lookups
                if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                    raise too_large(self.max_body_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received_bytes += len(message.get("body", b""))
                if received_bytes > self.max_body_bytes:
                    raise too_large(self.max_body_bytes)
            return message

        await self.app(scope, limited_receive, send)
