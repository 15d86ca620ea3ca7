"""Edits and Russian prompts of the offline default model, measured in-process.

    python -m bench.shapes_edits --seeds 4 --grid docs/edits-grid.png

Scores held-out edits (source scene + instruction pairs never trained on; asked attribute,
untouched attributes kept, shape mask IoU with the expected drawing) and held-out
text-to-image scenes in English and Russian, through `Flux2KleinPipeline` itself (edits via
its `image=` argument), and draws a grid: source | instruction | result, in both languages.
`flux-bench --edits --languages en,ru` gives the same rows (edit_rows, language_rows) per
variant and step count, in its report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from deployments.weights import TRAINED_CHECKPOINT
from training.shapes_edits import ATTRIBUTES, Edit, held_out_edits
from training.shapes_language import LANGUAGES
from training.shapes_scoring import edit_images, edit_scores, edit_sources, load, text_to_image_scores
from training.shapes_world import Scene, held_out_scenes

TILE_PX = 128
TEXT_PX = 260
FONT_PATH = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # Cyrillic; Pillow's own font otherwise


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


def edit_rows(pipeline, settings: dict, edits: list[Edit], seeds: int, languages: list[str]) -> list[dict]:
    """Per language, one row over all edits and one per attribute: the asked attribute right, the
    others kept, the shape's mask IoU with the expected drawing (the source's place and size)."""
    rows = []
    for language in languages:
        started = time.perf_counter()
        scores = edit_scores(pipeline, settings, edits, seeds, language)
        seconds_per_image = (time.perf_counter() - started) / (len(edits) * seeds)
        for attribute in ("all", *ATTRIBUTES):
            count = sum(1 for edit in edits if attribute in ("all", edit.attribute))
            prefix = "" if attribute == "all" else f"{attribute}/"
            if count:
                rows.append(
                    {
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
                )
    return rows


def language_rows(pipeline, settings: dict, scenes: list[Scene], seeds: int, languages: list[str]) -> list[dict]:
    """Text-to-image adherence per prompt language on the held-out scenes, and `all_vs_en`: the
    share with all three attributes right, minus English's (None for English or without it)."""
    rows = []
    for language in languages:
        started = time.perf_counter()
        scores = text_to_image_scores(pipeline, settings, scenes, seeds, language)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=TRAINED_CHECKPOINT)
    parser.add_argument("--seeds", type=int, default=4, help="images per held-out item")
    parser.add_argument("--grid", help="write the source | instruction | result grid (PNG) here")
    args = parser.parse_args()

    pipeline, settings = load(args.checkpoint)
    edits, scenes = held_out()
    print(f"{len(edits)} held-out edits, {len(scenes)} held-out scenes, {args.seeds} seeds each")
    print("| prompts | asked attribute | untouched kept | shape IoU | seconds |")
    print("|---|---|---|---|---|")
    for row in edit_rows(pipeline, settings, edits, args.seeds, list(LANGUAGES)):
        if row["attribute"] == "all":
            print(
                f"| edits, {row['language']} | {row['asked']:.3f} | {row['kept']:.3f} | {row['shape_iou']:.3f} "
                f"| {row['seconds_per_image'] * row['images']:.0f} |"
            )
    print("| text-to-image | shape colour | background | shape | all three |")
    print("|---|---|---|---|---|")
    for row in language_rows(pipeline, settings, scenes, args.seeds, list(LANGUAGES)):
        print(
            f"| {row['language']} | {row['colour']:.3f} | {row['background']:.3f} | {row['shape']:.3f} "
            f"| {row['all']:.3f} |"
        )
    if args.grid:
        draw_edit_grid(grid_rows(pipeline, settings, edits)).save(args.grid)
        print(f"grid: {args.grid}")


if __name__ == "__main__":
    main()
