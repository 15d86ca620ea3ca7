"""FluxClient and AsyncFluxClient: the public HTTP API of flux-serve from Python (httpx only; no Ray, no torch).

    with FluxClient("http://127.0.0.1:8000", api_key=KEY) as flux:
        job_id = flux.submit("a red circle on a blue background", num_images=4)
        job = flux.wait(job_id, on_progress=lambda update: print(update.describe()))
        paths = flux.download(job, "out")
        edited = flux.submit("make the background yellow", images=[flux.upload("photo.png")])

AsyncFluxClient has the same methods, to await. `wait` follows the job's events stream (GET /v1/jobs/{id}/events)
when the server has one and polls GET /v1/jobs/{id} otherwise, or when the stream breaks. Errors: FluxAPIError
(the API's status and message), FluxConnectionError (unreachable), JobFailed (the job ended without images),
TimeoutError.

The operations are written once (flux_client.operations); the two classes here only perform their effects,
one with blocking calls, the other awaiting.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from contextlib import AsyncExitStack, ExitStack

import httpx

from flux_client.config import DEFAULT_URL
from flux_client.errors import FluxConnectionError, raise_for_api_error
from flux_client.finetune_operations import FinetuneOperations
from flux_client.operations import (
    Flow,
    NextLine,
    Offload,
    OpenEvents,
    Operations,
    ProgressCallback,
    Report,
    Request,
    Scoped,
    Sleep,
    Step,
    finished,
)

EVENT_STREAM = "text/event-stream"

__all__ = ["DEFAULT_URL", "AsyncFluxClient", "FluxClient", "ProgressCallback", "finished", "is_event_stream"]


def is_event_stream(response: httpx.Response) -> bool:
    """A live events stream; a server without the route answers 404/405 (JSON), and then we poll."""
    return response.is_success and response.headers.get("content-type", "").startswith(EVENT_STREAM)


class _HTTP(Operations, FinetuneOperations):
    """What both transports make of an effect before and after the I/O."""

    def _request(self, effect: Request) -> dict:
        return {
            "method": effect.method,
            "url": effect.url,
            "headers": self.headers if effect.with_key else None,
            **effect.options,
        }

    def _events_request(self, effect: OpenEvents) -> dict:
        return {
            "method": "GET",
            "url": effect.path,
            "headers": {**self.headers, "accept": EVENT_STREAM},
            "timeout": httpx.Timeout(self.timeout_s, read=effect.read_timeout_s),
        }

    def _failure(self, error: Exception) -> Exception:
        """What the flow is told: a transport failure as FluxConnectionError naming the URL, else the error."""
        if not isinstance(error, httpx.TransportError):
            return error
        unreachable = FluxConnectionError(self.base_url, error)
        unreachable.__cause__ = error
        return unreachable


def _checked(response: httpx.Response) -> httpx.Response:
    raise_for_api_error(response)
    return response


class FluxClient(_HTTP):
    """Synchronous client. Use as a context manager, or call close()."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, *, transport=None, **options):
        super().__init__(base_url, api_key, **options)
        self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout_s, transport=transport)

    def __enter__(self):
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, flow: Flow):
        step = Step(flow)
        with ExitStack() as streams:
            while not step.done:
                try:
                    answer = self._perform(step.effect, streams)
                except Exception as error:
                    step.fail(self._failure(error))
                else:
                    step.answer(answer)
        return step.value

    def _perform(self, effect, streams: ExitStack):
        if isinstance(effect, Request):
            return _checked(self._http.request(**self._request(effect)))
        if isinstance(effect, OpenEvents):
            response = streams.enter_context(self._http.stream(**self._events_request(effect)))
            return response.iter_lines() if is_event_stream(response) else None
        if isinstance(effect, NextLine):
            return next(effect.lines, None)
        if isinstance(effect, Report):
            return effect.callback(effect.update)
        if isinstance(effect, Sleep):
            return time.sleep(effect.seconds)
        if isinstance(effect, Offload):
            return effect.function(*effect.args)
        if isinstance(effect, Scoped):
            return self._run(effect.flow)
        raise TypeError(f"unknown effect {effect!r}")


class AsyncFluxClient(_HTTP):
    """Asynchronous client (the Telegram bot's): FluxClient's methods, to await. Use as an async context
    manager, or await aclose()."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, *, transport=None, **options):
        super().__init__(base_url, api_key, **options)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s, transport=transport)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *_) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, flow: Flow):
        step = Step(flow)
        async with AsyncExitStack() as streams:
            while not step.done:
                try:
                    answer = await self._perform(step.effect, streams)
                except Exception as error:
                    step.fail(self._failure(error))
                else:
                    step.answer(answer)
        return step.value

    async def _perform(self, effect, streams: AsyncExitStack):
        if isinstance(effect, Request):
            return _checked(await self._http.request(**self._request(effect)))
        if isinstance(effect, OpenEvents):
            response = await streams.enter_async_context(self._http.stream(**self._events_request(effect)))
            return response.aiter_lines() if is_event_stream(response) else None
        if isinstance(effect, NextLine):
            return await anext(effect.lines, None)
        if isinstance(effect, Report):
            result = effect.callback(effect.update)
            return (await result) if inspect.isawaitable(result) else result
        if isinstance(effect, Sleep):
            return await asyncio.sleep(effect.seconds)
        if isinstance(effect, Offload):
            return await asyncio.to_thread(effect.function, *effect.args)
        if isinstance(effect, Scoped):
            return await self._run(effect.flow)
        raise TypeError(f"unknown effect {effect!r}")
