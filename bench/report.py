"""Turn measured cells into rows, then into Parquet, a Markdown table and PNG plots."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.cost import BenchConfig, gpu_seconds_per_image, seconds_on, usd_per_image
from bench.quality import ClipScorer, psnr_db, shapes_adherence, ssim
from bench.runners import STAGES, Cell, CellRun
from deployments.contracts import GenerationDefaults, GenerationParams
from deployments.registry import VARIANTS
from serve_apps.jobs.pricing import megapixel_steps

# Every row has these; cost adds `usd_per_image:<GPU>` and `usd_per_1000_images:<GPU>` per priced GPU
# (null where the run's peak GPU memory does not fit that card).
COLUMNS = (
    "variant",
    "weights",
    "mode",
    "device",
    "device_name",
    "priced_from",
    "steps",
    "batch_size",
    "width",
    "height",
    "concurrency",
    "requests",
    "images",
    *(f"{stage}_{q}_s" for stage in (*STAGES, "total") for q in ("p50", "p95")),
    "images_per_s",
    "peak_memory_mb",
    "peak_gpu_memory_mb",
    "gpu_fraction",
    "gpu_seconds_per_image",
    "gpu_s_per_megapixel_step",
    "quoted_gpu_s_per_megapixel_step",
    "reference_steps",
    "ssim",
    "psnr_db",
    "shapes_adherence",
    "clip_score",
)


# The edit, language and reference axes (flux-bench --edits / --languages / --references): one
# table each, every row with the context below.
AXIS_CONTEXT = ("variant", "weights", "mode", "device", "device_name", "steps")
EDIT_COLUMNS = (
    *AXIS_CONTEXT,
    "language",
    "attribute",
    "edits",
    "seeds",
    "images",
    "asked",
    "kept",
    "shape_iou",
    "seconds_per_image",
)
LANGUAGE_COLUMNS = (
    *AXIS_CONTEXT,
    "language",
    "scenes",
    "seeds",
    "images",
    "colour",
    "background",
    "shape",
    "all",
    "all_vs_en",
    "seconds_per_image",
)
REFERENCE_COLUMNS = (
    *AXIS_CONTEXT,
    "width",
    "height",
    "references",
    "image_tokens",
    "reference_tokens",
    "tokens_per_step",
    "requests",
    "denoise_p50_s",
    "denoise_p95_s",
    "total_p50_s",
    "total_p95_s",
    "vs_none",
    "added_s",
    "quoted_vs_none",
    "peak_gpu_memory_mb",
)
AXES = {"edits": EDIT_COLUMNS, "languages": LANGUAGE_COLUMNS, "references": REFERENCE_COLUMNS}


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def _mean_or_none(values: list) -> float | None:
    return float(np.mean(values)) if values else None


def _finite_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.inf


NO_QUALITY = dict.fromkeys(("reference_steps", "ssim", "psnr_db", "shapes_adherence", "clip_score"))


def _quality(runs: list[CellRun], clip: ClipScorer | None, score_quality: bool) -> dict[int, dict]:
    """SSIM/PSNR against the highest step count of the same variant, size, batch and concurrency."""
    if not score_quality:
        return {index: NO_QUALITY for index in range(len(runs))}
    groups = defaultdict(list)
    for index, run in enumerate(runs):
        cell = run.cell
        groups[(cell.variant, cell.width, cell.height, cell.batch_size, cell.concurrency)].append(index)
    scores = {}
    for members in groups.values():
        reference = runs[max(members, key=lambda i: runs[i].cell.steps)]
        for index in members:
            pairs = [
                (image, reference_image, sample.prompt)
                for sample, reference_sample in zip(runs[index].samples, reference.samples)
                for image, reference_image in zip(sample.images, reference_sample.images)
            ]
            adherence = [shapes_adherence(prompt, image) for image, _, prompt in pairs]
            adherence = [ok for ok in adherence if ok is not None]
            scores[index] = {
                "reference_steps": reference.cell.steps,
                "ssim": float(np.mean([ssim(a, b) for a, b, _ in pairs])),
                "psnr_db": _finite_mean([psnr_db(a, b) for a, b, _ in pairs]),
                "shapes_adherence": _mean_or_none(adherence),
                "clip_score": _mean_or_none(clip.score([a for a, _, _ in pairs], [p for _, _, p in pairs]))
                if clip
                else None,
            }
    return scores


def quoted_gpu_s_per_megapixel_step(variant: str) -> float | None:
    """The figure the service's price quote uses by default for `variant` (deployments/costs.py), if it has one."""
    spec = VARIANTS.get(variant)
    return spec.cost.gpu_s_per_megapixel_step if spec else None


def measured_gpu_s_per_megapixel_step(cell: Cell, defaults: GenerationDefaults, gpu_s_per_image: float) -> float:
    """This cell's GPU-seconds per image over what the quote counts for one (megapixels x passes: with CFG where
    the model's defaults run it): the quote's figure, as measured here."""
    params = GenerationParams.with_defaults(
        defaults, "", width=cell.width, height=cell.height, steps=cell.steps, seed=0, num_images=cell.batch_size
    )
    return gpu_s_per_image * cell.batch_size / megapixel_steps(params)


def build_rows(
    runs: list[CellRun],
    config: BenchConfig,
    *,
    defaults: dict[str, GenerationDefaults],
    mode: str,
    weights: str,
    device: str,
    device_name: str,
    gpu_fraction: float | None,
    clip: ClipScorer | None,
    score_quality: bool = True,
) -> list[dict]:
    """One row per cell; `score_quality=False` for random weights, whose images are noise.
    `priced_from` is the priced GPU the seconds were measured on, if the device is one; `defaults` are each
    variant's, which decide CFG for the measured seconds per megapixel-step."""
    quality = _quality(runs, clip, score_quality)
    priced_from = config.gpu_named(device_name) if device == "cuda" else None
    measured_on = config.gpu_prices.get(priced_from)
    rows = []
    for index, run in enumerate(runs):
        cell = run.cell
        images = sum(len(sample.images) for sample in run.samples)
        row = {
            "variant": cell.variant,
            "weights": weights,
            "mode": mode,
            "device": device,
            "device_name": device_name,
            "priced_from": priced_from,
            "steps": cell.steps,
            "batch_size": cell.batch_size,
            "width": cell.width,
            "height": cell.height,
            "concurrency": cell.concurrency,
            "requests": len(run.samples),
            "images": images,
        }
        for stage in (*STAGES, "total"):
            values = [sample.timings_s[stage] for sample in run.samples]
            row[f"{stage}_p50_s"] = _percentile(values, 50)
            row[f"{stage}_p95_s"] = _percentile(values, 95)
        measured_gpu_seconds = sum(sample.gpu_seconds for sample in run.samples)
        row.update(
            images_per_s=images / run.wall_s,
            peak_memory_mb=run.peak_memory_mb,
            peak_gpu_memory_mb=run.peak_gpu_memory_mb,
            gpu_fraction=gpu_fraction,
            gpu_seconds_per_image=gpu_seconds_per_image(measured_gpu_seconds, 1.0, images),
            **quality[index],
        )
        row["gpu_s_per_megapixel_step"] = measured_gpu_s_per_megapixel_step(
            cell, defaults[cell.variant], row["gpu_seconds_per_image"]
        )
        row["quoted_gpu_s_per_megapixel_step"] = quoted_gpu_s_per_megapixel_step(cell.variant)
        for gpu, price in config.gpu_prices.items():
            fits = price.fits(row["peak_gpu_memory_mb"])
            cost = usd_per_image(seconds_on(row["gpu_seconds_per_image"], measured_on, price), price) if fits else None
            row[f"usd_per_image:{gpu}"] = cost
            row[f"usd_per_1000_images:{gpu}"] = None if cost is None else 1000 * cost
        rows.append(row)
    return rows


def scores_note(rows: list[dict], clip_path: str | None) -> str:
    """Which quality scores were computed, said plainly in every output."""
    if all(row["ssim"] is None for row in rows):
        return (
            "Scores computed: none. Not computed: SSIM, PSNR, shapes adherence and CLIP score, since these "
            "weights are random and draw noise; latency, memory and cost are what this run measures."
        )
    computed = ["SSIM and PSNR against the same prompt and seed at the highest step count measured"]
    if any(row["shapes_adherence"] is not None for row in rows):
        computed.append("shapes-world adherence (colour, background and shape all as asked) on the shapes prompts")
    if clip_path:
        computed.append(f"CLIP score from {clip_path}")
    missing = (
        ""
        if clip_path
        else " Not computed: CLIP score (set clip_model_path in the bench config to a local CLIP folder)."
    )
    return "Scores computed: " + "; ".join(computed) + "." + missing


def write_parquet(rows: list[dict], path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


def fmt_value(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _usd(value: float) -> str:
    """Three significant digits without exponents: $0.0000153, $0.432, $250.00."""
    if value >= 1 or value <= 0:
        return f"${value:,.2f}"
    return f"${value:.{2 - math.floor(math.log10(value))}f}"


def _cost_basis(row: dict, config: BenchConfig) -> str:
    """Say which cost columns are measured and which are estimates."""
    if row["mode"] == "http":
        return "GPU-seconds are the service's own metering, priced as measured on every GPU."
    if row["device"] != "cuda":
        return "Measured on a CPU: the arithmetic is real, the seconds are not a GPU's (use --real-size on a GPU)."
    if row["priced_from"] is None:
        return f"Measured on {row['device_name']}, which the price table does not name: every column prices these seconds as they are."
    scaled = [gpu for gpu in config.gpu_prices if gpu != row["priced_from"]]
    return (
        f"Measured on {row['device_name']}: the {row['priced_from']} column is measured; {', '.join(scaled)} are "
        'estimates, its seconds scaled by peak bf16 throughput. "does not fit": the peak GPU memory is over '
        "that card's."
    )


def _quote_basis(row: dict) -> str:
    """What the GPU-s/MP-step column compares, and on what."""
    seconds = "GPU-seconds" if row["device"] != "cpu" else "CPU-seconds of this machine (not a GPU's)"
    return (
        f"GPU-s/MP-step: this run's {seconds} per megapixel and transformer pass (steps, twice with CFG), the "
        "figure the submit's price quote multiplies; in brackets the one the service quotes with "
        "(deployments/costs.py, measured on an H100 at 1024x1024, 4 steps, batch 1)."
    )


def markdown(rows: list[dict], config: BenchConfig, descriptions: dict[str, str], note: str, command: str) -> str:
    first = rows[0]
    lines = [
        f"# flux-bench: {first['mode']}, weights `{first['weights']}`, device {first['device']}",
        "",
        f"Command: `{command}`",
        "",
        *(f"- `{variant}`: {description}" for variant, description in descriptions.items()),
        "",
        note,
        "",
        "| variant | steps | batch | size | concurrency | encode p50 s | queue p50 s | denoise p50 / p95 s | decode p50 s "
        "| total p50 / p95 s | images/s | peak MB | peak GPU MB | SSIM | PSNR dB | shapes adherence | CLIP |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['steps']} | {r['batch_size']} | {r['width']}x{r['height']} | {r['concurrency']} "
            f"| {fmt_value(r['encode_p50_s'])} | {fmt_value(r['queue_p50_s'])} | {fmt_value(r['denoise_p50_s'])} / {fmt_value(r['denoise_p95_s'])} "
            f"| {fmt_value(r['decode_p50_s'])} | {fmt_value(r['total_p50_s'])} / {fmt_value(r['total_p95_s'])} | {fmt_value(r['images_per_s'], 2)} "
            f"| {fmt_value(r['peak_memory_mb'], 0)} | {fmt_value(r['peak_gpu_memory_mb'], 0)} | {fmt_value(r['ssim'])} | {fmt_value(r['psnr_db'], 1)} "
            f"| {fmt_value(r['shapes_adherence'], 2)} | {fmt_value(r['clip_score'], 1)} |"
        )
    gpus = list(config.gpu_prices)
    lines += [
        "",
        "## Cost per image (and per 1000 images)",
        "",
        "GPU-seconds per image (wall time x GPU fraction) x the GPU's price per hour "
        f"({', '.join(f'{gpu} ${price.hourly_usd:.2f}/h' for gpu, price in config.gpu_prices.items())}).",
        _cost_basis(first, config),
        _quote_basis(first),
        "",
        "| variant | steps | batch | size | concurrency | GPU-s/image | GPU-s/MP-step (quoted) | "
        + " | ".join(gpus)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(gpus),
    ]
    for r in rows:
        costs = " | ".join(
            "does not fit"
            if r[f"usd_per_image:{g}"] is None
            else f"{_usd(r[f'usd_per_image:{g}'])} ({_usd(r[f'usd_per_1000_images:{g}'])})"
            for g in gpus
        )
        lines.append(
            f"| {r['variant']} | {r['steps']} | {r['batch_size']} | {r['width']}x{r['height']} | {r['concurrency']} "
            f"| {fmt_value(r['gpu_seconds_per_image'], 4)} | {fmt_value(r['gpu_s_per_megapixel_step'])} "
            f"({fmt_value(r['quoted_gpu_s_per_megapixel_step'], 2)}) | {costs} |"
        )
    if config.hosted_reference_usd_per_image:
        lines += [
            "",
            "Reference points: "
            + "; ".join(
                f"{name} {_usd(value)}/image ({_usd(1000 * value)} per 1000)"
                for name, value in config.hosted_reference_usd_per_image.items()
            )
            + ".",
        ]
    return "\n".join(lines) + "\n"
