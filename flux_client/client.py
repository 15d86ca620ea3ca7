"""FluxClient and AsyncFluxClient: the public HTTP API of flux-serve from Python (httpx only; no Ray, no torch).

    with FluxClient("http://127.0.0.1:8000", api_key=KEY) as flux:
        job_id = flux.submit("a red circle on a blue background", num_images=4)
        job = flux.wait(job_id, on_progress=lambda update: print(update.describe()))
        paths = flux.download(job, "out")
        edited = flux.submit("make the background yellow", images=[flux.upload("photo.png")])

`wait` follows the job's events stream (GET /v1/jobs/{id}/events) when the server has one and polls
GET /v1/jobs/{id} otherwise, or when the stream breaks. Errors: FluxAPIError (the API's status and message),
FluxConnectionError (unreachable), JobFailed (the job ended without images), TimeoutError.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from flux_client.config import DEFAULT_URL
from flux_client.errors import FluxAPIError, FluxConnectionError, JobFailed, raise_for_api_error
from flux_client.progress import PENDING, READY, JobUpdate
from flux_client.protocol import (
    DEFAULT_MODEL,
    ImageInput,
    history_params,
    image_name,
    meaning,
    submit_body,
    upload_file,
)
from flux_client.sse import EventParser

EVENT_STREAM = "text/event-stream"
SERVER_ERROR = 500

ProgressCallback = Callable[[JobUpdate], object]


def is_event_stream(response: httpx.Response) -> bool:
    """A live events stream; a server without the route answers 404/405 (JSON), and then we poll."""
    return response.is_success and response.headers.get("content-type", "").startswith(EVENT_STREAM)


def finished(job: dict) -> dict:
    """The job if it has images; JobFailed otherwise."""
    if job["status"] != READY:
        raise JobFailed(job)
    return job


class _Progress:
    """Calls the user's callback once per distinct update (polls repeat themselves)."""

    def __init__(self, callback: ProgressCallback | None):
        self.callback = callback
        self.last: JobUpdate | None = None

    def changed(self, update: JobUpdate) -> bool:
        if self.callback is None or update == self.last:
            return False
        self.last = update
        return True


class _Base:
    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        poll_interval_s: float = 0.5,
        max_unreachable_s: float = 30.0,
        use_events: bool = True,
    ):
        self.base_url = base_url.rstrip("/")
        self.headers = {"x-key": api_key} if api_key else {}
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.max_unreachable_s = max_unreachable_s
        self.use_events = use_events

    def _unreachable(self, error: Exception) -> FluxConnectionError:
        return FluxConnectionError(self.base_url, error)

    @staticmethod
    def _transient(error: Exception) -> bool:
        """Worth polling on: the network, or a server error while an ingress replica restarts."""
        return isinstance(error, FluxConnectionError) or (
            isinstance(error, FluxAPIError) and error.status_code >= SERVER_ERROR
        )

    def _check_deadline(self, job_id: str, deadline: float, timeout_s: float) -> None:
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"job {job_id} still running after {timeout_s:g} s; wait again with a longer timeout_s or cancel it."
            )

    @staticmethod
    def _paths(job: dict, out_dir: str | Path) -> list[Path]:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return [folder / f"{job['id']}-{image_name(url)}" for url in job["images"]]


class FluxClient(_Base):
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

    def _call(self, method: str, path: str, **kwargs):
        try:
            response = self._http.request(method, path, headers=self.headers, **kwargs)
        except httpx.TransportError as error:
            raise self._unreachable(error) from error
        raise_for_api_error(response)
        return response.json()

    def submit(
        self, prompt: str, model: str = DEFAULT_MODEL, *, images: list[ImageInput] | None = None, **fields
    ) -> str:
        """Start a job; returns its id. fields: num_images, aspect_ratio, width, height, steps, seed,
        loras [(id, scale)], output_format. images: input images (paths, bytes or URLs) for edits."""
        return self._call("POST", f"/v1/{model}", json=submit_body(prompt, images=images, **fields))["id"]

    def upload(self, image: str | Path | bytes) -> str:
        """Store an input image on the server (POST /v1/uploads) once; returns its id (upload_...), which
        works in submit(images=[...]) as often as you like. Ids are private to the API key."""
        return self._call("POST", "/v1/uploads", files=upload_file(image))["id"]

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def history(self, limit: int = 20, cursor: str | None = None) -> dict:
        """{"jobs": [...newest first], "next_cursor": str | None}."""
        return self._call("GET", "/v1/jobs", params=history_params(limit, cursor))

    def usage(self) -> dict:
        return self._call("GET", "/v1/usage")

    def loras(self) -> list[dict]:
        return self._call("GET", "/v1/loras")

    def models(self) -> list[dict]:
        return self._call("GET", "/v1/models")

    def wait(self, job_id: str, on_progress: ProgressCallback | None = None, timeout_s: float = 600.0) -> dict:
        """The finished job (status Ready); JobFailed if it ended otherwise, TimeoutError after timeout_s."""
        deadline = time.monotonic() + timeout_s
        progress = _Progress(on_progress)
        job = self._follow_events(job_id, progress, deadline, timeout_s) if self.use_events else None
        return finished(job or self._poll(job_id, progress, deadline, timeout_s))

    def _report(self, progress: _Progress, update: JobUpdate) -> None:
        if progress.changed(update):
            progress.callback(update)

    def _follow_events(self, job_id: str, progress: _Progress, deadline: float, timeout_s: float) -> dict | None:
        """The final job from the events stream, or None when there is no stream or it broke."""
        parser = EventParser()
        read_timeout_s = min(self.timeout_s, max(1.0, deadline - time.monotonic()))
        try:
            with self._http.stream(
                "GET",
                f"/v1/jobs/{job_id}/events",
                headers={**self.headers, "accept": EVENT_STREAM},
                timeout=httpx.Timeout(self.timeout_s, read=read_timeout_s),
            ) as response:
                if not is_event_stream(response):
                    return None  # no events route here (or an error): polling reports it in the API's words
                for line in response.iter_lines():
                    event = parser.feed(line)
                    outcome = event and meaning(job_id, event)
                    if isinstance(outcome, dict):
                        return outcome
                    if outcome is not None:
                        self._report(progress, outcome)
                    self._check_deadline(job_id, deadline, timeout_s)
        except httpx.TransportError:
            return None
        return None

    def _poll(self, job_id: str, progress: _Progress, deadline: float, timeout_s: float) -> dict:
        unreachable_since = None
        while True:
            try:
                job = self.job(job_id)
            except (FluxConnectionError, FluxAPIError) as error:
                if not self._transient(error):
                    raise
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > self.max_unreachable_s:
                    raise
            else:
                unreachable_since = None
                self._report(progress, JobUpdate.from_job(job))
                if job["status"] != PENDING:
                    return job
            self._check_deadline(job_id, deadline, timeout_s)
            time.sleep(self.poll_interval_s)

    def image_bytes(self, job: dict) -> list[bytes]:
        """The job's images, from their signed URLs (no key sent: the signature is the permission)."""
        return [self._signed(url) for url in job["images"]]

    def reference_bytes(self, job: dict) -> list[bytes]:
        """The job's input images as the server stored them (PNG), from their signed URLs."""
        return [self._signed(url) for url in job.get("references", [])]

    def _signed(self, url: str) -> bytes:
        try:
            response = self._http.get(url)
        except httpx.TransportError as error:
            raise self._unreachable(error) from error
        raise_for_api_error(response)
        return response.content

    def download(self, job: dict, out_dir: str | Path) -> list[Path]:
        """Write the job's images to out_dir as JOBID-0.png, …; returns the paths written."""
        paths = self._paths(job, out_dir)
        for path, data in zip(paths, self.image_bytes(job)):
            path.write_bytes(data)
        return paths


class AsyncFluxClient(_Base):
    """Asynchronous client (the Telegram bot's). Use as an async context manager, or await aclose()."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, *, transport=None, **options):
        super().__init__(base_url, api_key, **options)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s, transport=transport)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *_) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs):
        try:
            response = await self._http.request(method, path, headers=self.headers, **kwargs)
        except httpx.TransportError as error:
            raise self._unreachable(error) from error
        raise_for_api_error(response)
        return response.json()

    async def submit(
        self, prompt: str, model: str = DEFAULT_MODEL, *, images: list[ImageInput] | None = None, **fields
    ) -> str:
        """As FluxClient.submit."""
        return (await self._call("POST", f"/v1/{model}", json=submit_body(prompt, images=images, **fields)))["id"]

    async def upload(self, image: str | Path | bytes) -> str:
        """As FluxClient.upload."""
        files = await asyncio.to_thread(upload_file, image)
        return (await self._call("POST", "/v1/uploads", files=files))["id"]

    async def job(self, job_id: str) -> dict:
        return await self._call("GET", f"/v1/jobs/{job_id}")

    async def cancel(self, job_id: str) -> dict:
        return await self._call("POST", f"/v1/jobs/{job_id}/cancel")

    async def history(self, limit: int = 20, cursor: str | None = None) -> dict:
        return await self._call("GET", "/v1/jobs", params=history_params(limit, cursor))

    async def usage(self) -> dict:
        return await self._call("GET", "/v1/usage")

    async def loras(self) -> list[dict]:
        return await self._call("GET", "/v1/loras")

    async def models(self) -> list[dict]:
        return await self._call("GET", "/v1/models")

    async def wait(self, job_id: str, on_progress: ProgressCallback | None = None, timeout_s: float = 600.0) -> dict:
        """As FluxClient.wait; on_progress may be a plain function or a coroutine function."""
        deadline = time.monotonic() + timeout_s
        progress = _Progress(on_progress)
        job = await self._follow_events(job_id, progress, deadline, timeout_s) if self.use_events else None
        return finished(job or await self._poll(job_id, progress, deadline, timeout_s))

    async def _report(self, progress: _Progress, update: JobUpdate) -> None:
        if progress.changed(update):
            result = progress.callback(update)
            if inspect.isawaitable(result):
                await result

    async def _follow_events(self, job_id: str, progress: _Progress, deadline: float, timeout_s: float) -> dict | None:
        parser = EventParser()
        read_timeout_s = min(self.timeout_s, max(1.0, deadline - time.monotonic()))
        try:
            async with self._http.stream(
                "GET",
                f"/v1/jobs/{job_id}/events",
                headers={**self.headers, "accept": EVENT_STREAM},
                timeout=httpx.Timeout(self.timeout_s, read=read_timeout_s),
            ) as response:
                if not is_event_stream(response):
                    return None  # no events route here (or an error): polling reports it in the API's words
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    outcome = event and meaning(job_id, event)
                    if isinstance(outcome, dict):
                        return outcome
                    if outcome is not None:
                        await self._report(progress, outcome)
                    self._check_deadline(job_id, deadline, timeout_s)
        except httpx.TransportError:
            return None
        return None

    async def _poll(self, job_id: str, progress: _Progress, deadline: float, timeout_s: float) -> dict:
        unreachable_since = None
        while True:
            try:
                job = await self.job(job_id)
            except (FluxConnectionError, FluxAPIError) as error:
                if not self._transient(error):
                    raise
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > self.max_unreachable_s:
                    raise
            else:
                unreachable_since = None
                await self._report(progress, JobUpdate.from_job(job))
                if job["status"] != PENDING:
                    return job
            self._check_deadline(job_id, deadline, timeout_s)
            await asyncio.sleep(self.poll_interval_s)

    async def image_bytes(self, job: dict) -> list[bytes]:
        return [await self._signed(url) for url in job["images"]]

    async def reference_bytes(self, job: dict) -> list[bytes]:
        """As FluxClient.reference_bytes."""
        return [await self._signed(url) for url in job.get("references", [])]

    async def _signed(self, url: str) -> bytes:
        try:
            response = await self._http.get(url)
        except httpx.TransportError as error:
            raise self._unreachable(error) from error
        raise_for_api_error(response)
        return response.content

    async def download(self, job: dict, out_dir: str | Path) -> list[Path]:
        paths = self._paths(job, out_dir)
        for path, data in zip(paths, await self.image_bytes(job)):
            path.write_bytes(data)
        return paths
