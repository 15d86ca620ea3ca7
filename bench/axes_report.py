"""The markdown of flux-bench's extra axes (edits, languages, references), apart from the main grid's report."""

from __future__ import annotations

from collections import defaultdict

from bench.report import fmt_value


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
            f"{count} (+{r['reference_tokens']} tokens per step) {fmt_value(r['total_p50_s'])} s, "
            f"{_ratio(r['vs_none'])} (+{fmt_value(r['added_s'])} s; the price quote says {_ratio(r['quoted_vs_none'])})"
            for count, r in sorted(by_count.items())
            if count
        )
        lines.append(
            f"- {variant} {width}x{height}, {steps} step{'s' * (steps != 1)}: none {fmt_value(by_count[0]['total_p50_s'])} s; {costs}."
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
                f"| {fmt_value(r['asked'])} | {fmt_value(r['kept'])} | {fmt_value(r['shape_iou'])} | {fmt_value(r['seconds_per_image'])} |"
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
                f"| {r['variant']} | {r['steps']} | {r['language']} | {r['scenes']} x {r['seeds']} | {fmt_value(r['colour'])} "
                f"| {fmt_value(r['background'])} | {fmt_value(r['shape'])} | {fmt_value(r['all'])} "
                f"| {_signed(r['all_vs_en'])} | {fmt_value(r['seconds_per_image'])} |"
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
                f"| {r['tokens_per_step']} | {fmt_value(r['denoise_p50_s'])} | {fmt_value(r['total_p50_s'])} / "
                f"{fmt_value(r['total_p95_s'])} | {_ratio(r['vs_none'])} | {fmt_value(r['added_s'])} "
                f"| {_ratio(r['quoted_vs_none'])} | {fmt_value(r['peak_gpu_memory_mb'], 0)} |"
                for r in references
            ),
            "",
            "What references cost:",
            "",
            *_reference_costs(references),
        ]
    return "\n".join(lines) + "\n" if lines else ""
