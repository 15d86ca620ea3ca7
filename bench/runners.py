"""Run one cell of the benchmark grid: on the model workers in-process, or through the service.

Both give the same record per request (prompt, images, seconds per stage, GPU-seconds), so
the report does not care where the numbers came from.
"""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import psutil
import torch
from PIL import Image

from deployments.acceleration import Acceleration
from deployments.contracts import GenerationDefaults, GenerationParams
from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
from deployments.loading import resolve_weights
from deployments.registry import get_variant

SEED = 1234
STAGES = ("encode", "queue", "denoise", "decode")


class BenchError(RuntimeError):
    """A benchmark run that cannot go on (a job that failed, a service that refused)."""


@dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    variant: str
    steps: int
    batch_size: int
    width: int
    height: int
    concurrency: int = 1
    output_format: str = "png"


@dataclass(frozen=True)
class ModelFacts:
    """What the weights say about themselves: shown in the report, and the grid's defaults."""

    description: str
    defaults: GenerationDefaults


@dataclass
class Sample:
    """One request: its prompt, images (uint8 RGB arrays), seconds per stage and GPU-seconds."""

    prompt: str
    images: list[np.ndarray]
    timings_s: dict[str, float]
    gpu_seconds: float


@dataclass
class CellRun:
    cell: Cell
    samples: list[Sample]
    wall_s: float
    peak_memory_mb: float | None
    peak_gpu_memory_mb: float | None


class PeakMemory:
    """Peak resident memory of this process (sampled) and peak CUDA memory while in the block."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.peak_rss_bytes = 0
        self.peak_gpu_bytes: int | None = None
        self._stop = threading.Event()
        self._process = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_bytes = max(self.peak_rss_bytes, self._process.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss_bytes = max(self.peak_rss_bytes, self._process.memory_info().rss)
        if torch.cuda.is_available():
            self.peak_gpu_bytes = torch.cuda.max_memory_allocated()


def _image_to_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def load_workers(
    model: str, weights: str, device: str = "auto", **denoiser_options: Any
) -> tuple[TextEncoder, Denoiser]:
    """One variant's text encoder and denoiser, loaded as the service's replicas load them.

    `denoiser_options` are the Denoiser's own knobs (e.g. max_loaded_adapters), for benchmarks of them.
    """
    encoder = TextEncoder(model, weights=weights, device=device)
    return encoder, Denoiser(model, weights=weights, device=device, **denoiser_options)


class InProcessRunner:
    """The service's model workers in this process: no HTTP, no queue, nothing shared."""

    mode = "in-process"

    def __init__(
        self, weights: str, device: str = "auto", gpu_fraction: float = 1.0, acceleration: Acceleration | None = None
    ):
        self.weights = weights
        self.device = device
        self.gpu_fraction = gpu_fraction
        self.acceleration = acceleration
        self._loaded: dict[str, tuple[TextEncoder, Denoiser]] = {}

    def workers(self, variant: str) -> tuple[TextEncoder, Denoiser]:
        """Each variant is loaded once, the first time a cell needs it (one variant at a time)."""
        if variant not in self._loaded:
            self._loaded.clear()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self._loaded[variant] = load_workers(variant, self.weights, self.device, acceleration=self.acceleration)
        return self._loaded[variant]

    def model_facts(self, variant: str) -> ModelFacts:
        weights = resolve_weights(get_variant(variant), self.weights)
        return ModelFacts(weights.description, weights.defaults)

    def run(self, cell: Cell, prompts: list[str], on_request=lambda: None) -> CellRun:
        self._one(cell, prompts[0])  # warm-up: first-call costs are not what a served model pays
        samples = []
        with PeakMemory() as memory:
            started = time.perf_counter()
            for prompt in prompts:
                samples.append(self._one(cell, prompt))
                on_request()
            wall_s = time.perf_counter() - started
        gpu_mb = memory.peak_gpu_bytes / 2**20 if memory.peak_gpu_bytes is not None else None
        return CellRun(cell, samples, wall_s, memory.peak_rss_bytes / 2**20, gpu_mb)

    def _one(self, cell: Cell, prompt: str) -> Sample:
        encoder, denoiser = self.workers(cell.variant)
        encoder.cache.clear()  # measure a real encoding, not a cache hit
        params = GenerationParams.with_defaults(
            denoiser.defaults,
            prompt,
            width=cell.width,
            height=cell.height,
            steps=cell.steps,
            seed=SEED,
            num_images=cell.batch_size,
            output_format=cell.output_format,
        )
        started = time.perf_counter()
        job = encoder.job(params)
        encode_s = time.perf_counter() - started
        [result] = denoiser.generate([job])
        timings = {
            "encode": encode_s,
            "queue": 0.0,
            "denoise": result.timings_s["denoise"],
            "decode": result.timings_s["decode"],
        }
        timings["total"] = time.perf_counter() - started
        gpu_seconds = (timings["denoise"] + timings["decode"]) * self.gpu_fraction
        return Sample(prompt, [_image_to_array(image) for image in result.images], timings, gpu_seconds)


class HttpRunner:
    """The running service over HTTP: submit, poll, fetch, as a client would.

    GPU-seconds come from the service's own metering (pass time x the replica's GPU fraction
    x the job's share of the pass), so batching across concurrent requests shows in the cost.
    With `fetch_images=False` a request ends at Ready, for latency alone (no images to score).
    """

    mode = "http"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        poll_interval_s: float = 0.02,
        timeout_s: float = 600,
        fetch_images: bool = True,
    ):
        self.client = httpx.Client(base_url=base_url, headers={"x-key": api_key}, timeout=60)
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.fetch_images = fetch_images

    def model_facts(self, variant: str) -> ModelFacts:
        models = {model["id"]: model for model in self._checked(self.client.get("/v1/models")).json()}
        if variant not in models:
            raise BenchError(f"the service does not serve {variant!r}; it serves {', '.join(models)}")
        return ModelFacts(models[variant]["description"], GenerationDefaults(**models[variant]["defaults"]))

    def run(self, cell: Cell, prompts: list[str], on_request=lambda: None) -> CellRun:
        self._one(cell, prompts[0])
        requests = [prompts[i % len(prompts)] for i in range(max(len(prompts), cell.concurrency))]

        def one(prompt: str) -> Sample:
            sample = self._one(cell, prompt)
            on_request()
            return sample

        started = time.perf_counter()
        with ThreadPoolExecutor(cell.concurrency) as pool:
            samples = list(pool.map(one, requests))
        return CellRun(cell, samples, time.perf_counter() - started, None, None)

    def _checked(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise BenchError(
                f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text}"
            )
        return response

    def _one(self, cell: Cell, prompt: str) -> Sample:
        started = time.perf_counter()
        body = {
            "prompt": prompt,
            "width": cell.width,
            "height": cell.height,
            "steps": cell.steps,
            "seed": SEED,
            "num_images": cell.batch_size,
            "output_format": cell.output_format,
        }
        job_id = self._checked(self.client.post(f"/v1/{cell.variant}", json=body)).json()["id"]
        while True:
            job = self._checked(self.client.get(f"/v1/jobs/{job_id}")).json()
            if job["status"] != "Pending":
                break
            if time.perf_counter() - started > self.timeout_s:
                raise BenchError(f"job {job_id} still Pending after {self.timeout_s} s")
            time.sleep(self.poll_interval_s)
        if job["status"] != "Ready":
            raise BenchError(f"job {job_id} ended {job['status']}: {job.get('error')}")
        urls = job["images"] if self.fetch_images else []
        images = [_image_to_array(self._checked(self.client.get(url)).content) for url in urls]
        timings = {stage: float(job["timings_s"].get(stage, 0.0)) for stage in STAGES}
        timings["total"] = time.perf_counter() - started
        return Sample(prompt, images, timings, float((job.get("usage") or {}).get("gpu_seconds", 0.0)))
