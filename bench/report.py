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
from bench.runners import STAGES, CellRun

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


def build_rows(
    runs: list[CellRun],
    config: BenchConfig,
    *,
    mode: str,
    weights: str,
    device: str,
    device_name: str,
    gpu_fraction: float | None,
    clip: ClipScorer | None,
    score_quality: bool = True,
) -> list[dict]:
    """One row per cell; `score_quality=False` for random weights, whose images are noise.
    `priced_from` is the priced GPU the seconds were measured on, if the device is one."""
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


def _fmt(value, digits: int = 3) -> str:
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
            f"| {_fmt(r['encode_p50_s'])} | {_fmt(r['queue_p50_s'])} | {_fmt(r['denoise_p50_s'])} / {_fmt(r['denoise_p95_s'])} "
            f"| {_fmt(r['decode_p50_s'])} | {_fmt(r['total_p50_s'])} / {_fmt(r['total_p95_s'])} | {_fmt(r['images_per_s'], 2)} "
            f"| {_fmt(r['peak_memory_mb'], 0)} | {_fmt(r['peak_gpu_memory_mb'], 0)} | {_fmt(r['ssim'])} | {_fmt(r['psnr_db'], 1)} "
            f"| {_fmt(r['shapes_adherence'], 2)} | {_fmt(r['clip_score'], 1)} |"
        )
    gpus = list(config.gpu_prices)
    lines += [
        "",
        "## Cost per image (and per 1000 images)",
        "",
        "GPU-seconds per image (wall time x GPU fraction) x the GPU's price per hour "
        f"({', '.join(f'{gpu} ${price.hourly_usd:.2f}/h' for gpu, price in config.gpu_prices.items())}).",
        _cost_basis(first, config),
        "",
        "| variant | steps | batch | size | concurrency | GPU-s/image | " + " | ".join(gpus) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(gpus),
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
            f"| {_fmt(r['gpu_seconds_per_image'], 4)} | {costs} |"
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


def _signed(value) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _ratio(value) -> str:
    return "-" if value is None else f"x{value:.2f}"


def _reference_costs(rows: list[dict]) -> list[str]:
    """One sentence per variant, size and step count: what 1, 2 ... references add to one image."""
    groups = defaultdict(dict)
    for r in rows:
        groups[(r["variant"], r["width"], r["height"], r["steps"])][r["references"]] = r
    lines = []
    for (variant, width, height, steps), by_count in groups.items():
        if 0 not in by_count or len(by_count) < 2:
            continue
        costs = "; ".join(
            f"{count} (+{r['reference_tokens']} tokens per step) {_fmt(r['total_p50_s'])} s, "
            f"{_ratio(r['vs_none'])} (+{_fmt(r['added_s'])} s; the price quote says {_ratio(r['quoted_vs_none'])})"
            for count, r in sorted(by_count.items())
            if count
        )
        lines.append(
            f"- {variant} {width}x{height}, {steps} step{'s' * (steps != 1)}: none {_fmt(by_count[0]['total_p50_s'])} s; {costs}."
        )
    return lines


def axes_markdown(axes: dict[str, list[dict]]) -> str:
    """The edit, language and reference tables, for whichever of them ran ('' when none did)."""
    lines = []
    edits, languages, references = axes.get("edits"), axes.get("languages"), axes.get("references")
    if edits:
        lines += [
            "",
            "## Edits (held-out)",
            "",
            "Held-out edits (source scene and instruction pairs never trained on), through the pipeline's "
            "`image=` reference path; image i of an edit uses seed i. asked: the asked attribute reads as asked; "
            "kept: the other two unchanged; shape IoU: the shape's mask against the expected drawing (the "
            "source's place and size).",
            "",
            "| variant | steps | language | attribute | edits x seeds | asked | kept | shape IoU | s/image |",
            "|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {r['variant']} | {r['steps']} | {r['language']} | {r['attribute']} | {r['edits']} x {r['seeds']} "
                f"| {_fmt(r['asked'])} | {_fmt(r['kept'])} | {_fmt(r['shape_iou'])} | {_fmt(r['seconds_per_image'])} |"
                for r in edits
            ),
        ]
    if languages:
        lines += [
            "",
            "## Prompt languages (text-to-image, held-out scenes)",
            "",
            "The held-out scenes' captions in each language; the share of images whose shape colour, background, "
            "shape and all three read as asked; vs English: all three, minus English's.",
            "",
            "| variant | steps | language | scenes x seeds | shape colour | background | shape | all three | vs English "
            "| s/image |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {r['variant']} | {r['steps']} | {r['language']} | {r['scenes']} x {r['seeds']} | {_fmt(r['colour'])} "
                f"| {_fmt(r['background'])} | {_fmt(r['shape'])} | {_fmt(r['all'])} "
                f"| {_signed(r['all_vs_en'])} | {_fmt(r['seconds_per_image'])} |"
                for r in languages
            ),
        ]
    if references:
        lines += [
            "",
            "## Reference images",
            "",
            "One image with 0, 1, 2 ... references of the output's size, p50 of one request per prompt. Each "
            "reference adds (its pixels / 256) tokens to every step (diffusers' klein pipeline scales larger ones "
            "down to 1 MP, so a 1024x1024 reference adds 4096 tokens, as many as a 1024x1024 output) and is "
            "VAE-encoded once per pass. quoted: the ratio the submit's price quote assumes (output plus "
            "reference megapixels).",
            "",
            "| variant | steps | size | references | tokens per step | denoise p50 s | total p50 / p95 s | vs none "
            "| added s | quoted | peak GPU MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {r['variant']} | {r['steps']} | {r['width']}x{r['height']} | {r['references']} "
                f"| {r['tokens_per_step']} | {_fmt(r['denoise_p50_s'])} | {_fmt(r['total_p50_s'])} / "
                f"{_fmt(r['total_p95_s'])} | {_ratio(r['vs_none'])} | {_fmt(r['added_s'])} "
                f"| {_ratio(r['quoted_vs_none'])} | {_fmt(r['peak_gpu_memory_mb'], 0)} |"
                for r in references
            ),
            "",
            "What references cost:",
            "",
            *_reference_costs(references),
        ]
    return "\n".join(lines) + "\n" if lines else ""


def _series(rows: list[dict]) -> dict[str, list[dict]]:
    lines = defaultdict(list)
    for row in rows:
        label = f"{row['variant']} {row['width']}x{row['height']} batch {row['batch_size']}"
        if row["mode"] == "http":
            label += f" x{row['concurrency']}"
        lines[label].append(row)
    return {label: sorted(members, key=lambda r: r["steps"]) for label, members in lines.items()}


def plot(rows: list[dict], config: BenchConfig, out_dir: Path, default_steps: dict[str, int]) -> list[Path]:
    """Latency vs steps, quality vs steps, and cost per image per variant at its default steps
    (its cheapest batch), with the hosted-API reference points drawn across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label, members in _series(rows).items():
        axis.plot([r["steps"] for r in members], [r["total_p50_s"] for r in members], marker="o", label=label)
    axis.set(xlabel="steps", ylabel="latency per request, p50 (s)", title="Latency vs steps", xscale="log")
    axis.legend(fontsize=7)
    paths.append(out_dir / "latency_vs_steps.png")
    figure.savefig(paths[-1], dpi=120, bbox_inches="tight")

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label, members in _series(rows).items():
        steps = [r["steps"] for r in members]
        axis.plot(steps, [r["ssim"] for r in members], marker="o", label=f"{label}: SSIM")
        if members[0]["shapes_adherence"] is not None:
            axis.plot(
                steps,
                [r["shapes_adherence"] for r in members],
                marker="s",
                linestyle="--",
                label=f"{label}: shapes adherence",
            )
    title = "Quality vs steps (SSIM vs the most-steps image)"
    if all(row["ssim"] is None for row in rows):
        title = "Quality not scored: random weights draw noise"
    axis.set(xlabel="steps", ylabel="score (1 = best)", title=title, xscale="log", ylim=(0, 1.05))
    axis.legend(fontsize=7)
    paths.append(out_dir / "quality_vs_steps.png")
    figure.savefig(paths[-1], dpi=120, bbox_inches="tight")

    figure, axis = plt.subplots(figsize=(7, 4.5))
    chosen = {}
    for variant in dict.fromkeys(row["variant"] for row in rows):
        own = [r for r in rows if r["variant"] == variant]
        at_default = [r for r in own if r["steps"] == default_steps.get(variant)]
        chosen[variant] = min(at_default or own, key=lambda r: r["gpu_seconds_per_image"])
    gpus = list(config.gpu_prices)
    width = 0.8 / len(gpus)
    for offset, gpu in enumerate(gpus):
        values = [chosen[v][f"usd_per_image:{gpu}"] or 0.0 for v in chosen]  # 0: does not fit that card
        axis.bar([i + offset * width for i in range(len(chosen))], values, width=width, label=gpu)
    for name, value in config.hosted_reference_usd_per_image.items():
        axis.axhline(value, linestyle=":", color="grey")
        axis.annotate(f"{name} ${value:.2f}", (0, value), fontsize=7, va="bottom")
    axis.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(chosen))],
        [f"{v}\n{chosen[v]['steps']} steps, batch {chosen[v]['batch_size']}" for v in chosen],
        fontsize=7,
    )
    axis.set(ylabel="USD per image (log)", title="Cost per image", yscale="log")
    axis.legend(fontsize=7)
    paths.append(out_dir / "cost_per_image.png")
    figure.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close("all")
    return paths
