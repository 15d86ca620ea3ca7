"""The client's operations, written once for FluxClient and AsyncFluxClient and doing no I/O themselves.

Each operation is a flow: a generator that yields what it needs done (an effect: an API request, the events
stream's next line, a pause, a progress report) and is sent the answer, or has the failure thrown in where it
yielded, so a flow reads like plain blocking code:

    @operation
    def job(self, job_id):
        return (yield from self._call("GET", f"/v1/jobs/{job_id}"))

`operation` makes the flow a public method that hands it to the client's `_run`: FluxClient performs the effects
with blocking httpx calls and returns the value; AsyncFluxClient awaits them, so its methods return awaitables
(flux_client.client).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from flux_client.config import DEFAULT_URL
from flux_client.errors import FluxAPIError, FluxConnectionError, JobFailed
from flux_client.finetune import finetuned_body
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

SERVER_ERROR = 500

ProgressCallback = Callable[[JobUpdate], object]
T = TypeVar("T")


# -- effects: what a flow asks its client to do ----------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """An HTTP request; the answer is the response (FluxAPIError when it is an error, FluxConnectionError when
    the service cannot be reached). with_key=False for signed URLs: the signature is the permission."""

    method: str
    url: str
    options: dict = field(default_factory=dict)  # httpx's json=, files=, params=
    with_key: bool = True


@dataclass(frozen=True)
class OpenEvents:
    """Open a job's events stream; the answer is its lines (for NextLine), or None when the server answers
    without a stream (no such route, an error). It stays open until the flow that opened it ends."""

    path: str
    read_timeout_s: float


@dataclass(frozen=True)
class NextLine:
    """The stream's next line (without its newline); None at its end."""

    lines: object  # what OpenEvents answered


@dataclass(frozen=True)
class Report:
    """Call the user's progress callback (awaiting what it returns, in the async client)."""

    callback: ProgressCallback
    update: JobUpdate


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Offload:
    """function(*args): blocking work such as reading a file, run off the event loop in the async client."""

    function: Callable
    args: tuple


@dataclass(frozen=True)
class Scoped:
    """Run a sub-flow; the streams it opens are closed when it ends (a `with` block around it)."""

    flow: Flow


Effect = Request | OpenEvents | NextLine | Report | Sleep | Offload | Scoped
Flow = Generator[Effect, Any, T]


class Step:
    """A flow being run: `effect` is what it asks for now; answer it or fail it until `done`, then read `value`."""

    def __init__(self, flow: Flow):
        self.flow = flow
        self.done = False
        self.value = None
        self._resume(flow.send, None)

    def answer(self, value) -> None:
        self._resume(self.flow.send, value)

    def fail(self, error: Exception) -> None:
        """Raise `error` where the flow yielded; if it does not catch it, it comes out of here."""
        self._resume(self.flow.throw, error)

    def _resume(self, resume: Callable, argument) -> None:
        try:
            self.effect = resume(argument)
        except StopIteration as stop:
            self.done, self.value = True, stop.value


def operation(flow: Callable[..., Flow]) -> Callable[..., Any]:
    """A public method from a flow: FluxClient returns its value, AsyncFluxClient an awaitable of it."""

    @functools.wraps(flow)
    def method(self, *args, **kwargs):
        return self._run(flow(self, *args, **kwargs))

    return method


# -- pieces of wait ------------------------------------------------------------------------------------


def finished(job: dict) -> dict:
    """The job if it has images; JobFailed otherwise."""
    if job["status"] != READY:
        raise JobFailed(job)
    return job


def transient(error: Exception) -> bool:
    """Worth polling on: the network, or a server error while an ingress replica restarts."""
    return isinstance(error, FluxConnectionError) or (
        isinstance(error, FluxAPIError) and error.status_code >= SERVER_ERROR
    )


class _Watch:
    """One wait: the job, its deadline, and the progress callback, called once per distinct update (polls
    repeat themselves)."""

    def __init__(self, job_id: str, on_progress: ProgressCallback | None, timeout_s: float):
        self.job_id = job_id
        self.on_progress = on_progress
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.last: JobUpdate | None = None

    def report(self, update: JobUpdate) -> Flow[None]:
        if self.on_progress is not None and update != self.last:
            self.last = update
            yield Report(self.on_progress, update)

    def check_deadline(self) -> None:
        if time.monotonic() >= self.deadline:
            raise TimeoutError(
                f"job {self.job_id} still running after {self.timeout_s:g} s; "
                "wait again with a longer timeout_s or cancel it."
            )


# -- the operations ------------------------------------------------------------------------------------


class Operations:
    """What FluxClient and AsyncFluxClient share: their options and every operation. Subclasses give `_run`."""

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

    def _run(self, flow: Flow):
        raise NotImplementedError

    def _call(self, method: str, path: str, **options) -> Flow[Any]:
        """An API call with the key; its JSON."""
        return (yield Request(method, path, options)).json()

    @operation
    def submit(self, prompt: str, model: str = DEFAULT_MODEL, **options) -> Flow[str]:
        """Start a job; returns its id. Options as submit_job's."""
        return (yield from self._submitted(prompt, model, **options))["id"]

    @operation
    def submit_job(self, prompt: str, model: str = DEFAULT_MODEL, **options) -> Flow[dict]:
        """Start a job; returns the submit's answer: id, polling_url, eta_s (seconds until Ready, estimated), cost.
        Options: num_images, aspect_ratio, width, height, steps, seed, loras [(id, scale)], output_format,
        deadline_s (a job whose ETA is longer is refused at once: FluxAPIError 429 saying what would fit);
        images: input images (paths, bytes or URLs) for edits; finetune: a finetune id of this key
        (POST /v1/{model}-finetuned), at finetune_strength (None: its measured default)."""
        return (yield from self._submitted(prompt, model, **options))

    def _submitted(
        self,
        prompt: str,
        model: str,
        *,
        images: list[ImageInput] | None = None,
        finetune: str | None = None,
        finetune_strength: float | None = None,
        **fields,
    ) -> Flow[dict]:
        body = submit_body(prompt, images=images, **fields)
        if finetune is None:
            return (yield from self._call("POST", f"/v1/{model}", json=body))
        body = finetuned_body(body, finetune, finetune_strength)
        return (yield from self._call("POST", f"/v1/{model}-finetuned", json=body))

    @operation
    def upload(self, image: str | Path | bytes) -> Flow[str]:
        """Store an input image on the server (POST /v1/uploads) once; returns its id (upload_...), which
        works in submit(images=[...]) as often as you like. Ids are private to the API key."""
        files = yield Offload(upload_file, (image,))
        return (yield from self._call("POST", "/v1/uploads", files=files))["id"]

    @operation
    def job(self, job_id: str) -> Flow[dict]:
        return (yield from self._call("GET", f"/v1/jobs/{job_id}"))

    @operation
    def rerun(self, job_id: str) -> Flow[dict]:
        """Make a Ready job again from its recorded request (POST /v1/jobs/{id}/rerun): the submit's answer of the
        new job. Once it is Ready, job(new)["rerun"] says whether its images equal the original's byte for byte."""
        return (yield from self._call("POST", f"/v1/jobs/{job_id}/rerun"))

    @operation
    def cancel(self, job_id: str) -> Flow[dict]:
        return (yield from self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    @operation
    def history(self, limit: int = 20, cursor: str | None = None) -> Flow[dict]:
        """{"jobs": [...newest first], "next_cursor": str | None}."""
        return (yield from self._call("GET", "/v1/jobs", params=history_params(limit, cursor)))

    @operation
    def usage(self) -> Flow[dict]:
        return (yield from self._call("GET", "/v1/usage"))

    @operation
    def loras(self) -> Flow[list[dict]]:
        return (yield from self._call("GET", "/v1/loras"))

    @operation
    def models(self) -> Flow[list[dict]]:
        return (yield from self._call("GET", "/v1/models"))

    @operation
    def wait(self, job_id: str, on_progress: ProgressCallback | None = None, timeout_s: float = 600.0) -> Flow[dict]:
        """The finished job (status Ready); JobFailed if it ended otherwise, TimeoutError after timeout_s.
        on_progress gets a JobUpdate per change (AsyncFluxClient: a plain function or a coroutine function)."""
        watch = _Watch(job_id, on_progress, timeout_s)
        job = (yield Scoped(self._follow_events(watch))) if self.use_events else None
        return finished(job or (yield from self._poll(watch)))

    def _follow_events(self, watch: _Watch) -> Flow[dict | None]:
        """The final job from the events stream, or None when there is no stream or it broke."""
        parser = EventParser()
        read_timeout_s = min(self.timeout_s, max(1.0, watch.deadline - time.monotonic()))
        try:
            lines = yield OpenEvents(f"/v1/jobs/{watch.job_id}/events", read_timeout_s)
            if lines is None:
                return None  # no events route here (or an error): polling reports it in the API's words
            while (line := (yield NextLine(lines))) is not None:
                event = parser.feed(line)
                outcome = event and meaning(watch.job_id, event)
                if isinstance(outcome, dict):
                    return outcome
                if outcome is not None:
                    yield from watch.report(outcome)
                watch.check_deadline()
        except FluxConnectionError:
            return None
        return None

    def _poll(
        self,
        watch: _Watch,
        path: str | None = None,
        params: dict | None = None,
        update: Callable[[dict], JobUpdate] = JobUpdate.from_job,
        interval_s: float | None = None,
    ) -> Flow[dict]:
        """GET path (default: the job) until its status is not Pending, riding out short outages."""
        unreachable_since = None
        while True:
            try:
                job = yield from self._call("GET", path or f"/v1/jobs/{watch.job_id}", params=params)
            except (FluxConnectionError, FluxAPIError) as error:
                if not transient(error):
                    raise
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > self.max_unreachable_s:
                    raise
            else:
                unreachable_since = None
                yield from watch.report(update(job))
                if job["status"] != PENDING:
                    return job
            watch.check_deadline()
            yield Sleep(self.poll_interval_s if interval_s is None else interval_s)

    @operation
    def image_bytes(self, job: dict) -> Flow[list[bytes]]:
        """The job's images, from their signed URLs (no key sent: the signature is the permission)."""
        return (yield from self._signed(job["images"]))

    @operation
    def reference_bytes(self, job: dict) -> Flow[list[bytes]]:
        """The job's input images as the server stored them (PNG), from their signed URLs."""
        return (yield from self._signed(job.get("references", [])))

    def _signed(self, urls: list[str]) -> Flow[list[bytes]]:
        contents = []
        for url in urls:
            contents.append((yield Request("GET", url, with_key=False)).content)
        return contents

    @operation
    def download(self, job: dict, out_dir: str | Path) -> Flow[list[Path]]:
        """Write the job's images to out_dir as JOBID-0.png, …; returns the paths written."""
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{job['id']}-{image_name(url)}" for url in job["images"]]
        for path, data in zip(paths, (yield from self._signed(job["images"]))):
            path.write_bytes(data)
        return paths
