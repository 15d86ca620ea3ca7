"""How fast a served model works, as running figures learned from its last finished jobs: what an ETA is made of.

No new state: the figures are computed from the last `PACE_WINDOW` Ready jobs' records (their timings, params and
batch), which every ingress replica reads from the one database, so replicas agree and a restart keeps them; each
replica recomputes them at most every few seconds (serve_apps/jobs/estimates.py). Before any job of a model has
ended, a step is priced by the quote's cost model (`pricing.gpu_s_per_megapixel_step`: deployments/costs.py's
measured seconds per megapixel-step scaled to `pricing.gpu_type`), the other figures start at zero, and a cold
start at `COLD_START_PRIOR_S`.

A denoiser runs a pass of several images at once, so a step's time is fitted as a line against the pass's latent
megapixels (`fixed_s + per_unit_s x megapixels`): the fixed part is what batching shares, the slope what each image
adds. Jobs of one pass report the same denoise time, so each pass is counted once. Newer passes weigh more (half
the weight every `HALF_LIFE_PASSES` passes back), so the figures follow a machine that got busier or a new setting.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from deployments.contracts import GenerationParams
from serve_apps.jobs.records import JobRecord

MEGAPIXEL = 1024 * 1024
REFERENCE_AREA_PX = 1024 * 1024  # diffusers' klein pipeline shrinks larger references to this (as the quote counts)
PACE_WINDOW = 100  # Ready jobs the figures are learned from, newest first
HALF_LIFE_PASSES = 20
OVERHEAD_QUANTILE = 0.25  # a job alone in its call shows the true overhead; one behind others' passes shows more
COLD_START_PRIOR_S = 60.0  # a replica started for a job, before one was measured: loading weights takes this long
MIN_SPREAD = 0.1  # pass sizes closer than this (relative) cannot tell the fixed part from the slope


@dataclass(frozen=True)
class Line:
    """seconds = fixed_s + per_unit_s x units."""

    fixed_s: float
    per_unit_s: float

    def at(self, units: float) -> float:
        return self.fixed_s + self.per_unit_s * units


@dataclass(frozen=True)
class Pace:
    """A model's running figures. `step`: one denoising step of a pass against its latent megapixels (output and
    reference tokens, twice with CFG); `decode`: the pass's VAE decode and image encoding against its output
    megapixels; `encode_s`: the prompt's encoding; `overhead_s`: the rest of a job (its stage writes, Ray's hops,
    storing the images, the final write); `learned_from`: Ready jobs behind them (0: the cost model's prior)."""

    step: Line
    decode: Line
    encode_s: float
    overhead_s: float
    cold_start_s: float
    learned_from: int

    def pass_s(self, images: int, latent_mp_each: float, output_mp_each: float, steps: int) -> float:
        """Seconds a replica spends on one pass of `images` images of one size: its steps, then its decode."""
        return steps * self.step.at(images * latent_mp_each) + self.decode.at(images * output_mp_each)

    @property
    def source(self) -> str:
        if self.learned_from:
            return f"measured on the last {self.learned_from} Ready job(s)"
        return "the price quote's cost model (no job has ended yet)"


def prior_pace(gpu_s_per_megapixel_step: float) -> Pace:
    """Before any job ended: a step costs what the price quote says, nothing else is counted yet."""
    return Pace(Line(0.0, gpu_s_per_megapixel_step), Line(0.0, 0.0), 0.0, 0.0, COLD_START_PRIOR_S, 0)


def output_mp(params: GenerationParams) -> float:
    """One output image's megapixels."""
    return params.width * params.height / MEGAPIXEL


def latent_mp(params: GenerationParams) -> float:
    """One image's share of a pass, in megapixels: its output and its references' tokens, twice with CFG."""
    references_px = sum(min(REFERENCE_AREA_PX, ref.width * ref.height) for ref in params.references)
    return (output_mp(params) + references_px / MEGAPIXEL) * (2 if params.uses_cfg else 1)


@dataclass(frozen=True)
class PassSample:
    """One pass as a finished job saw it: images in it, their latent and output megapixels, one step's and the
    decode's seconds."""

    images: int
    latent_mp_each: float
    output_mp_each: float
    step_s: float
    decode_s: float


def pass_samples(records: list[JobRecord]) -> list[PassSample]:
    """One sample per pass, newest first. A job's timings are its passes' (`batch.images` the largest of them), so a
    job split over several passes gives their mean; jobs of one pass share its denoise time and node, and the pass's
    decode is the longest any of them waited for its images."""
    passes: dict[tuple, PassSample] = {}
    for record in records:
        timings, params = record.timings_s, record.params
        images = int(record.batch.get("images") or 0)
        if images < 1 or timings.get("denoise", 0.0) <= 0:
            continue
        count = math.ceil(params.num_images / images)
        key = (timings["denoise"], images, record.batch.get("requests"), record.batch.get("node"), params.steps)
        sample = PassSample(
            images,
            latent_mp(params),
            output_mp(params),
            timings["denoise"] / (params.steps * count),
            timings.get("decode", 0.0) / count,
        )
        seen = passes.get(key)
        if seen is None or sample.decode_s > seen.decode_s:
            passes[key] = sample
    return list(passes.values())


def weighted_line(points: list[tuple[float, float]], prior: Line) -> Line:
    """The recency-weighted least-squares line through (units, seconds) points, newest first; never below zero.
    Points of one size (too little spread to tell a fixed part) give a line through zero at their mean rate."""
    if not points:
        return prior
    weights = [0.5 ** (rank / HALF_LIFE_PASSES) for rank in range(len(points))]
    total = sum(weights)
    mean_x = sum(w * x for w, (x, _) in zip(weights, points)) / total
    mean_y = sum(w * y for w, (_, y) in zip(weights, points)) / total
    spread = sum(w * (x - mean_x) ** 2 for w, (x, _) in zip(weights, points)) / total
    if mean_x <= 0:
        return Line(max(0.0, mean_y), 0.0)
    if math.sqrt(spread) < MIN_SPREAD * mean_x:
        return Line(0.0, max(0.0, mean_y / mean_x))
    slope = sum(w * (x - mean_x) * (y - mean_y) for w, (x, y) in zip(weights, points)) / total / spread
    slope = max(0.0, slope)
    fixed = mean_y - slope * mean_x
    if fixed < 0:  # a line that would make small passes free: through zero instead
        return Line(0.0, mean_y / mean_x)
    return Line(fixed, slope)


def lower_quantile(values: list[float], quantile: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


def learn_pace(records: list[JobRecord], prior: Pace) -> Pace:
    """The running figures from Ready jobs' records (newest first); the prior's where they say nothing."""
    measured = [record for record in records if record.timings_s.get("denoise")]
    if not measured:
        return prior
    samples = pass_samples(measured)
    step = weighted_line([(s.images * s.latent_mp_each, s.step_s) for s in samples], prior.step)
    decode = weighted_line([(s.images * s.output_mp_each, s.decode_s) for s in samples], prior.decode)
    overheads = []
    for record in measured:
        timings = record.timings_s
        own = sum(timings.get(stage, 0.0) for stage in ("queue", "encode", "denoise", "decode"))
        overheads.append(max(0.0, timings.get("total", own) - own))
    cold_starts = [record.timings_s["cold_start"] for record in measured if record.timings_s.get("cold_start", 0) > 0]
    return Pace(
        step=step,
        decode=decode,
        encode_s=statistics.median(record.timings_s.get("encode", 0.0) for record in measured),
        overhead_s=lower_quantile(overheads, OVERHEAD_QUANTILE),
        cold_start_s=statistics.median(cold_starts) if cold_starts else prior.cold_start_s,
        learned_from=len(measured),
    )
