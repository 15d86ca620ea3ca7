"""flux-bench's figures: latency, quality and cost against steps (matplotlib, the bench extra)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from bench.cost import BenchConfig


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
