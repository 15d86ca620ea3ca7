"""Edits and Russian prompts of the offline default model, measured in-process.

    python -m bench.shapes_edits --seeds 4 --grid docs/edits-grid.png     # the validation split
    python -m bench.shapes_edits --seeds 4 --split test                     # the test split, once

Scores held-out edits (source scene + instruction pairs never trained on; asked attribute,
untouched attributes kept, both at once (joint), shape mask IoU with the expected drawing),
each beside what returning the source unchanged (copy) and its background alone (blank)
score, and held-out text-to-image scenes in English and Russian, through
`Flux2KleinPipeline` itself (edits via its `image=` argument), and draws a grid: source |
instruction | result, in both languages. The validation split chose the training stages and
settings; the test split (training/shapes_test_split.py) chose nothing. `flux-bench --edits
--languages en,ru` gives the validation rows (edit_rows, language_rows) per variant and step
count, in its report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from deployments.weights import TRAINED_CHECKPOINT
from training.shapes_edits import ATTRIBUTES, EDIT_FIGURES, Edit, held_out_edits
from training.shapes_language import LANGUAGES
from training.shapes_scoring import (
    SOURCE_SEED,
    edit_baselines,
    edit_images,
    edit_scores,
    edit_sources,
    load,
    text_to_image_scores,
)
from training.shapes_test_split import FINAL_TEST_FIRST_SEED, FINAL_TEST_SOURCE_SEED, final_test_edits
from training.shapes_world import Scene, held_out_scenes

TILE_PX = 128
TEXT_PX = 260
FONT_PATH = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # Cyrillic; Pillow's own font otherwise
ROW_KEYS = {"asked": "asked", "kept": "kept", "joint": "joint", "iou": "shape_iou"}  # edit figure -> row column


def grid_font(size: int = 14) -> ImageFont.ImageFont:
    return ImageFont.truetype(str(FONT_PATH), size) if FONT_PATH.exists() else ImageFont.load_default(size=size)


def draw_edit_grid(rows: list[tuple[Image.Image, str, Image.Image]]) -> Image.Image:
    """One row per edit: the source, the instruction, the result (nearest-neighbour upscaled)."""
    grid = Image.new("RGB", (2 * TILE_PX + TEXT_PX, len(rows) * TILE_PX), "white")
    pen, font = ImageDraw.Draw(grid), grid_font()
    for index, (source, text, result) in enumerate(rows):
        top = index * TILE_PX
        grid.paste(source.resize((TILE_PX, TILE_PX), Image.NEAREST), (0, top))
        pen.text((TILE_PX + 10, top + TILE_PX // 2), f"{text}  →", fill="black", font=font, anchor="lm")
        grid.paste(result.resize((TILE_PX, TILE_PX), Image.NEAREST), (TILE_PX + TEXT_PX, top))
    return grid


def grid_rows(pipeline, settings: dict, edits: list[Edit]) -> list[tuple[Image.Image, str, Image.Image]]:
    """Each attribute once in English and once in Russian, seed 0."""
    chosen = [(next(edit for edit in edits if edit.attribute == attribute), attribute) for attribute in ATTRIBUTES]
    rows = []
    for language, offset in (("en", 0), ("ru", 1)):
        for first, attribute in chosen:
            same = [edit for edit in edits if edit.attribute == attribute]
            edit = same[(same.index(first) + offset) % len(same)]
            source = edit_sources([edit])[0][0]
            result = edit_images(pipeline, settings, [edit], [source], 1, language)[0][0]
            rows.append((source, edit.instruction(language), result))
    return rows


def held_out(per_attribute: int | None = None, scenes: int | None = None) -> tuple[list[Edit], list[Scene]]:
    """The held-out edits (the first `per_attribute` of each attribute) and scenes (the first `scenes`); all by default."""
    edits = held_out_edits()
    chosen = [
        edit for attribute in ATTRIBUTES for edit in [e for e in edits if e.attribute == attribute][:per_attribute]
    ]
    return chosen, held_out_scenes()[:scenes]


def edit_rows(
    pipeline,
    settings: dict,
    edits: list[Edit],
    seeds: int,
    languages: list[str],
    first_seed: int = 0,
    source_seed: int = SOURCE_SEED,
    with_baselines: bool = False,
) -> list[dict]:
    """Per language, one row over all edits and one per attribute: the asked attribute right, the
    others kept, the shape's mask IoU with the expected drawing (the source's place and size).
    `with_baselines` adds the joint rate (asked and kept at once) and the copy and blank baselines'
    asked, kept, joint and shape IoU (`copy_asked`, ...); flux-bench's edit table has no columns for
    them yet (bench/report.py EDIT_COLUMNS)."""
    baselines = edit_baselines(edits, source_seed) if with_baselines else {}
    rows = []
    for language in languages:
        started = time.perf_counter()
        scores = edit_scores(pipeline, settings, edits, seeds, language, first_seed, source_seed)
        seconds_per_image = (time.perf_counter() - started) / (len(edits) * seeds)
        for attribute in ("all", *ATTRIBUTES):
            count = sum(1 for edit in edits if attribute in ("all", edit.attribute))
            prefix = "" if attribute == "all" else f"{attribute}/"
            if count:
                row = {
                    "language": language,
                    "attribute": attribute,
                    "edits": count,
                    "seeds": seeds,
                    "images": count * seeds,
                    "asked": scores[f"{prefix}asked"],
                    "kept": scores[f"{prefix}kept"],
                    "shape_iou": scores[f"{prefix}iou"],
                    "seconds_per_image": seconds_per_image,
                }
                if with_baselines:
                    row["joint"] = scores[f"{prefix}joint"]
                    for name, figures in baselines.items():
                        row.update({f"{name}_{ROW_KEYS[key]}": figures[f"{prefix}{key}"] for key in EDIT_FIGURES})
                rows.append(row)
    return rows


def language_rows(
    pipeline, settings: dict, scenes: list[Scene], seeds: int, languages: list[str], first_seed: int = 0
) -> list[dict]:
    """Text-to-image adherence per prompt language on the held-out scenes, and `all_vs_en`: the
    share with all three attributes right, minus English's (None for English or without it)."""
    rows = []
    for language in languages:
        started = time.perf_counter()
        scores = text_to_image_scores(pipeline, settings, scenes, seeds, language, first_seed=first_seed)
        rows.append(
            {
                "language": language,
                "scenes": len(scenes),
                "seeds": seeds,
                "images": len(scenes) * seeds,
                **{key: scores[key] for key in ("colour", "background", "shape", "all")},
                "seconds_per_image": (time.perf_counter() - started) / (len(scenes) * seeds),
            }
        )
    english = next((row["all"] for row in rows if row["language"] == "en"), None)
    for row in rows:
        row["all_vs_en"] = None if english is None or row["language"] == "en" else row["all"] - english
    return rows


def with_baselines(row: dict, key: str) -> str:
    """'0.849 (1.000 / 0.000)': the model's figure, then the copy's and the blank's."""
    return f"{row[key]:.3f} ({row[f'copy_{key}']:.3f} / {row[f'blank_{key}']:.3f})"


def split_items(split: str) -> tuple[list[Edit], list[Scene], int, int]:
    """A split's edits, scenes, first sampling seed and source placement seed."""
    if split == "test":
        return final_test_edits(), held_out_scenes(), FINAL_TEST_FIRST_SEED, FINAL_TEST_SOURCE_SEED
    return (*held_out(), 0, SOURCE_SEED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=TRAINED_CHECKPOINT)
    parser.add_argument("--seeds", type=int, default=4, help="images per held-out item")
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--grid", help="write the source | instruction | result grid (PNG) here")
    args = parser.parse_args()

    pipeline, settings = load(args.checkpoint)
    edits, scenes, first_seed, source_seed = split_items(args.split)
    print(
        f"{args.split} split: {len(edits)} edits, {len(scenes)} scenes, {args.seeds} samples each (sample i uses "
        f"seed {first_seed} + i); in brackets: (copy / blank), the source returned unchanged / its background alone"
    )
    print("| edits | asked attribute | untouched kept | asked and kept (joint) | shape IoU | seconds |")
    print("|---|---|---|---|---|---|")
    rows = edit_rows(pipeline, settings, edits, args.seeds, list(LANGUAGES), first_seed, source_seed, True)
    for row in rows:
        print(
            f"| {row['language']}, {row['attribute']} ({row['edits']}) | {with_baselines(row, 'asked')} "
            f"| {with_baselines(row, 'kept')} | {with_baselines(row, 'joint')} | {with_baselines(row, 'shape_iou')} "
            f"| {row['seconds_per_image'] * row['images']:.0f} |"
        )
    print("| text-to-image | shape colour | background | shape | all three |")
    print("|---|---|---|---|---|")
    for row in language_rows(pipeline, settings, scenes, args.seeds, list(LANGUAGES), first_seed):
        print(
            f"| {row['language']} | {row['colour']:.3f} | {row['background']:.3f} | {row['shape']:.3f} "
            f"| {row['all']:.3f} |"
        )
    if args.grid:
        draw_edit_grid(grid_rows(pipeline, settings, edits)).save(args.grid)
        print(f"grid: {args.grid}")


if __name__ == "__main__":
    main()
