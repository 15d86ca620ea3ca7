"""How fast a served model works, as running figures learned from its last finished jobs: what an ETA is made of.

No new state: the figures are computed from the last `PACE_WINDOW` Ready jobs' records (their timings, params and
batch), which every ingress replica reads from the one database, so replicas agree and a restart keeps them; each
replica recomputes them at most every few seconds (serve_apps/jobs/estimates.py). Before any job of a model has
ended, a step is priced by the quote's cost model (`pricing.gpu_s_per_megapixel_step`: deployments/costs.py's
measured seconds per megapixel-step scaled to `pricing.gpu_type`), the other figures start at zero, and a cold
start at `COLD_START_PRIOR_S`.

A denoiser runs a pass of several images at once; a step's time is fitted per image as `per_mp_s x m + per_mp2_s x
m^2` of the image's megapixels m (its token sequence: output and references; attention grows with its square), and
the decode's likewise. Jobs of one pass report the same denoise time, so each pass is counted once. Newer passes
weigh more (half the weight every `HALF_LIFE_PASSES` passes back), so the figures follow a machine that got busier.
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
HALF_LIFE_PASSES = 8
OVERHEAD_QUANTILE = 0.25  # a job alone in its call shows the true overhead; one behind others' passes shows more
COLD_START_PRIOR_S = 60.0  # a replica started for a job, before one was measured: loading weights takes this long
MIN_DETERMINANT = 1e-9  # image sizes too alike to tell the square term from the linear one


@dataclass(frozen=True)
class Curve:
    """Seconds for `images` images of `mp_each` megapixels each: images x (per_mp_s x mp + per_mp2_s x mp^2)."""

    per_mp_s: float
    per_mp2_s: float = 0.0

    def at(self, images: float, mp_each: float) -> float:
        return images * (self.per_mp_s * mp_each + self.per_mp2_s * mp_each * mp_each)


@dataclass(frozen=True)
class Pace:
    """A model's running figures. `step`: one denoising step of a pass, by its images (twice with CFG) and their
    sequence's megapixels (output and reference tokens); `decode`: the pass's VAE decode and image encoding, by its
    images and their output megapixels; `encode_s`: the prompt's encoding; `overhead_s`: the rest of a job (its stage writes, Ray's hops,
    the final write); `store_s_per_image`: storing one image (a call stores all its jobs' images before any of
    them returns); `learned_from`: Ready jobs behind them (0: the cost model's prior)."""

    step: Curve
    decode: Curve
    encode_s: float
    overhead_s: float
    cold_start_s: float
    learned_from: int
    store_s_per_image: float = 0.0

    def pass_s(self, images: int, sequence_mp_each: float, cfg_factor: int, output_mp_each: float, steps: int) -> float:
        """Seconds a replica spends on one pass of `images` images of one size: its steps, then its decode."""
        return steps * self.step.at(images * cfg_factor, sequence_mp_each) + self.decode.at(images, output_mp_each)

    @property
    def source(self) -> str:
        if self.learned_from:
            return f"measured on the last {self.learned_from} Ready job(s)"
        return "the price quote's cost model (no job has ended yet)"


def prior_pace(gpu_s_per_megapixel_step: float) -> Pace:
    """Before any job ended: a step costs what the price quote says, nothing else is counted yet."""
    return Pace(Curve(gpu_s_per_megapixel_step), Curve(0.0), 0.0, 0.0, COLD_START_PRIOR_S, 0)


def output_mp(params: GenerationParams) -> float:
    """One output image's megapixels."""
    return params.width * params.height / MEGAPIXEL


def sequence_mp(params: GenerationParams) -> float:
    """One image's token sequence, in megapixels: its output and its references."""
    references_px = sum(min(REFERENCE_AREA_PX, ref.width * ref.height) for ref in params.references)
    return output_mp(params) + references_px / MEGAPIXEL


@dataclass(frozen=True)
class PassSample:
    """One pass as a finished job saw it: images in it (twice with CFG, as the transformer sees them), their
    sequence's and output megapixels, one step's and the decode's seconds."""

    images: int
    decoded: int
    sequence_mp_each: float
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
            images * (2 if params.uses_cfg else 1),
            images,
            sequence_mp(params),
            output_mp(params),
            timings["denoise"] / (params.steps * count),
            timings.get("decode", 0.0) / count,
        )
        seen = passes.get(key)
        if seen is None or sample.decode_s > seen.decode_s:
            passes[key] = sample
    return list(passes.values())


def weighted_curve(points: list[tuple[int, float, float]], prior: Curve) -> Curve:
    """The recency-weighted least-squares curve through (images, mp_each, seconds) points, newest first, never
    negative: both terms where the sizes tell them apart, else the better of one term alone."""
    if not points:
        return prior
    weights = [0.5 ** (rank / HALF_LIFE_PASSES) for rank in range(len(points))]
    rows = [(w, mp, mp * mp, seconds / images) for w, (images, mp, seconds) in zip(weights, points) if mp > 0]
    suu = sum(w * u * u for w, u, _, _ in rows)
    svv = sum(w * v * v for w, _, v, _ in rows)
    suv = sum(w * u * v for w, u, v, _ in rows)
    sut = sum(w * u * t for w, u, _, t in rows)
    svt = sum(w * v * t for w, _, v, t in rows)
    if not rows or suu <= 0:
        return prior
    determinant = suu * svv - suv * suv
    if determinant > MIN_DETERMINANT * suu * svv:
        linear, square = (sut * svv - svt * suv) / determinant, (svt * suu - sut * suv) / determinant
        if linear >= 0 and square >= 0:
            return Curve(linear, square)
    candidates = [Curve(max(0.0, sut / suu)), Curve(0.0, max(0.0, svt / svv))]

    def error(curve: Curve) -> float:
        return sum(w * (curve.at(1, u) - t) ** 2 for w, u, _, t in rows)

    return min(candidates, key=error)


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
    step = weighted_curve([(s.images, s.sequence_mp_each, s.step_s) for s in samples], prior.step)
    decode = weighted_curve([(s.decoded, s.output_mp_each, s.decode_s) for s in samples], prior.decode)
    overheads = []
    for record in measured:  # from its submit to its final write (which its `total` timing does not include)
        own = sum(record.timings_s.get(stage, 0.0) for stage in ("queue", "encode", "denoise", "decode", "store"))
        overheads.append(max(0.0, record.updated_at - record.created_at - own))
    cold_starts = [record.timings_s["cold_start"] for record in measured if record.timings_s.get("cold_start", 0) > 0]
    return Pace(
        step=step,
        decode=decode,
        encode_s=statistics.median(record.timings_s.get("encode", 0.0) for record in measured),
        overhead_s=lower_quantile(overheads, OVERHEAD_QUANTILE),
        cold_start_s=statistics.median(cold_starts) if cold_starts else prior.cold_start_s,
        learned_from=len(measured),
        store_s_per_image=statistics.median(r.timings_s.get("store", 0.0) / r.params.num_images for r in measured),
    )
