"""Custom Ray metrics (exported to Prometheus, shown in the Ray dashboard's Metrics view)."""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

MODEL = ("model",)

IMAGES = Counter("flux_images_generated_total", description="Images generated", tag_keys=MODEL)
BATCH_IMAGES = Histogram(
    "flux_batch_images",
    description="Images in the forward pass a job ran in",
    boundaries=[1, 2, 4, 8, 12, 24],
    tag_keys=MODEL,
)
STEP_SECONDS = Histogram(
    "flux_step_seconds",
    description="Seconds per denoising step of a forward pass",
    boundaries=[0.01, 0.03, 0.1, 0.3, 1, 3],
    tag_keys=MODEL,
)
COLD_STARTS = Counter("flux_cold_starts_total", description="Denoiser replicas started (model loaded)", tag_keys=MODEL)
WARMUP_SECONDS = Histogram(
    "flux_warmup_seconds",
    description="Seconds a starting denoiser replica spent warming up (compiling) before taking requests",
    boundaries=[1, 10, 30, 60, 120, 300],
    tag_keys=MODEL,
)
GPU_SECONDS = Counter(
    "flux_gpu_seconds_total", description="GPU-seconds used by jobs (time x GPU fraction)", tag_keys=MODEL
)
COST_USD = Counter("flux_cost_usd_total", description="Cost of jobs at the configured GPU price", tag_keys=MODEL)
QUEUE_DEPTH = Gauge("flux_jobs_in_flight", description="Jobs an ingress replica is running", tag_keys=MODEL)


def record_job(model: str, result, gpu_seconds: float) -> None:
    tags = {"model": model}
    if result.images:
        IMAGES.inc(len(result.images), tags=tags)
        BATCH_IMAGES.observe(result.batch_images, tags=tags)
        STEP_SECONDS.observe(result.timings_s.get("denoise", 0.0) / max(1, result.params.steps), tags=tags)
    if gpu_seconds:
        GPU_SECONDS.inc(gpu_seconds, tags=tags)
