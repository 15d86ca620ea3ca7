"""Score a shapes pipeline in-process: text-to-image per language and size, and edits.

Runs `Flux2KleinPipeline` itself (edits through its `image=` argument), so the trainer,
the bench and the tests measure exactly what the checkpoint does, without the service.
Image i of a prompt uses seed i, as the service's seeded requests do.

Two splits: the held-out scenes and edits (`held_out_*` figures) chose the training stages and
settings, so they are validation; the test split (`held_out_test_*`, training/shapes_test_split.py)
is scored only by `score_test_split`, which nothing that trains or selects calls.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from diffusers import Flux2KleinPipeline
from PIL import Image

from training.shapes_edits import Edit, baseline_adherence, draw_pair, edit_adherence, held_out_edits
from training.shapes_language import caption
from training.shapes_test_split import FINAL_TEST_FIRST_SEED, FINAL_TEST_SOURCE_SEED, final_test_edits
from training.shapes_world import IMAGE_SIDE_PX, Scene, adherence, held_out_scenes

SETTINGS_FILENAME = "flux_serve.json"
WIDE_SIZES_PX = ((112, 64), (80, 64))  # 7:4 (the nearest to 16:9 with sides >= 64) and 5:4
SOURCE_SEED = 1000  # validation edit i's source drawing is placed with random.Random(SOURCE_SEED + i)


def guidance(settings: dict, edits: bool) -> float:
    """The service's default (`GenerationDefaults.guidance_for`): edits at `default_edit_guidance` when set."""
    return float(
        settings.get("default_edit_guidance", settings["default_guidance"]) if edits else settings["default_guidance"]
    )


def _sample(
    pipeline: Flux2KleinPipeline, settings: dict, prompts: list[str], seeds: int, first_seed: int = 0, **kwargs
) -> list:
    """`seeds` images per prompt, image i sampled with seed `first_seed + i`."""
    return pipeline(
        prompt=prompts,
        num_images_per_prompt=seeds,
        num_inference_steps=settings["default_steps"],
        guidance_scale=guidance(settings, edits="image" in kwargs),
        generator=[torch.Generator().manual_seed(first_seed + i) for _ in prompts for i in range(seeds)],
        max_sequence_length=settings["max_sequence_length"],
        text_encoder_out_layers=tuple(settings["text_encoder_out_layers"]),
        **kwargs,
    ).images


@torch.no_grad()
def text_to_image_images(
    pipeline: Flux2KleinPipeline,
    settings: dict,
    scenes: list[Scene],
    seeds: int,
    language: str = "en",
    width_px: int = IMAGE_SIDE_PX,
    height_px: int = IMAGE_SIDE_PX,
    chunk: int = 8,
    first_seed: int = 0,
) -> list[list[Image.Image]]:
    images = []
    for start in range(0, len(scenes), chunk):
        prompts = [caption(scene, language) for scene in scenes[start : start + chunk]]
        flat = _sample(pipeline, settings, prompts, seeds, first_seed, width=width_px, height=height_px)
        images += [flat[index : index + seeds] for index in range(0, len(flat), seeds)]
    return images


def text_to_image_scores(
    pipeline, settings, scenes, seeds, language="en", width_px=64, height_px=64, first_seed: int = 0
) -> dict:
    """Share of images whose colour, background and shape read as asked."""
    images = text_to_image_images(
        pipeline, settings, scenes, seeds, language, width_px, height_px, first_seed=first_seed
    )
    return adherence(scenes, images)


def edit_sources(
    edits: list[Edit], width_px: int = IMAGE_SIDE_PX, height_px: int = IMAGE_SIDE_PX, source_seed: int = SOURCE_SEED
) -> list[tuple]:
    """(source, expected) drawings per edit, placed by a seed fixed per edit index."""
    return [
        draw_pair(edit, random.Random(source_seed + index), width_px, height_px) for index, edit in enumerate(edits)
    ]


@torch.no_grad()
def edit_images(
    pipeline: Flux2KleinPipeline,
    settings: dict,
    edits: list[Edit],
    sources: list[Image.Image],
    seeds: int,
    language,
    first_seed: int = 0,
) -> list[list[Image.Image]]:
    """`seeds` results per edit, the source passed as the pipeline's reference image."""
    return [
        _sample(pipeline, settings, [edit.instruction(language)], seeds, first_seed, image=[source])
        for edit, source in zip(edits, sources)
    ]


def edit_scores(
    pipeline,
    settings,
    edits: list[Edit],
    seeds: int,
    language: str = "en",
    first_seed: int = 0,
    source_seed: int = SOURCE_SEED,
) -> dict:
    """Asked attribute right, the others kept, both (joint), mask IoU with the expected drawing; overall and
    per attribute."""
    pairs = edit_sources(edits, source_seed=source_seed)
    sources = [source for source, _ in pairs]
    results = edit_images(pipeline, settings, edits, sources, seeds, language, first_seed)
    return edit_adherence(edits, results, [expected for _, expected in pairs])


def edit_baselines(edits: list[Edit], source_seed: int = SOURCE_SEED) -> dict[str, dict]:
    """What returning the source unchanged ('copy') and its background alone ('blank') score on the same
    edits, drawn as `edit_scores` draws them; no model, so no seeds and one figure for every language."""
    pairs = edit_sources(edits, source_seed=source_seed)
    return baseline_adherence(edits, [source for source, _ in pairs], [expected for _, expected in pairs])


def load(checkpoint: Path) -> tuple[Flux2KleinPipeline, dict]:
    pipeline = Flux2KleinPipeline.from_pretrained(checkpoint, dtype=torch.float32)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline, json.loads((Path(checkpoint) / SETTINGS_FILENAME).read_text())


def score_checkpoint(
    checkpoint: Path, seeds: int = 4, edits: bool = True, first_seed: int = 0, english_only: bool = False
) -> dict[str, dict]:
    """Every validation figure flux_serve.json records: text-to-image EN/RU (and at 16:9-ish sizes), edits
    EN/RU beside the copy and blank baselines. `english_only` keeps the two the acceptance compares across
    checkpoints (English 64x64, English edits)."""
    pipeline, settings = load(checkpoint)
    scenes = held_out_scenes()
    scores = {"held_out_scores": text_to_image_scores(pipeline, settings, scenes, seeds, "en", first_seed=first_seed)}
    if not english_only:
        scores["held_out_scores_ru"] = text_to_image_scores(
            pipeline, settings, scenes, seeds, "ru", first_seed=first_seed
        )
        for width_px, height_px in WIDE_SIZES_PX:
            scores[f"held_out_scores_{width_px}x{height_px}"] = text_to_image_scores(
                pipeline, settings, scenes, seeds, "en", width_px, height_px, first_seed
            )
    if edits:
        for language in ["en"] if english_only else ["en", "ru"]:
            key = "held_out_edit_scores" + ("" if language == "en" else f"_{language}")
            scores[key] = edit_scores(pipeline, settings, held_out_edits(), seeds, language, first_seed)
        scores["held_out_edit_baselines"] = edit_baselines(held_out_edits())
    return scores


def score_test_split(checkpoint: Path, seeds: int = 4) -> dict[str, dict]:
    """The test split's figures (training/shapes_test_split.py), for a checkpoint whose every choice is made:
    text-to-image EN/RU at unscored seeds, untouched edits EN/RU beside their copy and blank baselines."""
    pipeline, settings = load(checkpoint)
    scenes, edits, scores = held_out_scenes(), final_test_edits(), {}
    for language, suffix in (("en", ""), ("ru", "_ru")):
        scores[f"held_out_test_scores{suffix}"] = text_to_image_scores(
            pipeline, settings, scenes, seeds, language, first_seed=FINAL_TEST_FIRST_SEED
        )
        scores[f"held_out_test_edit_scores{suffix}"] = edit_scores(
            pipeline, settings, edits, seeds, language, FINAL_TEST_FIRST_SEED, FINAL_TEST_SOURCE_SEED
        )
    scores["held_out_test_edit_baselines"] = edit_baselines(edits, FINAL_TEST_SOURCE_SEED)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description="Score a shapes checkpoint on its validation or its test split.")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="image i uses seed first-seed + i (the recorded figures: 0)"
    )
    parser.add_argument("--english-only", action="store_true", help="English text to image at 64x64 and edits only")
    parser.add_argument("--no-edits", action="store_true", help="text-to-image only (a checkpoint that cannot edit)")
    parser.add_argument(
        "--test-split", action="store_true", help="the test split instead (training/shapes_test_split.py): once"
    )
    parser.add_argument("--write", action="store_true", help="record the scores in the checkpoint's flux_serve.json")
    args = parser.parse_args()
    if args.write and (args.first_seed or args.english_only):
        parser.error("--write records the standard figures only: drop --first-seed and --english-only")
    if args.test_split and (args.first_seed or args.english_only or args.no_edits):
        parser.error("--test-split scores its own seeds, both languages and edits: drop the other choices")
    started = time.time()
    if args.test_split:
        scores = score_test_split(args.checkpoint, args.seeds)
    else:
        scores = score_checkpoint(args.checkpoint, args.seeds, not args.no_edits, args.first_seed, args.english_only)
    print(json.dumps(scores, indent=2), f"\nscored in {time.time() - started:.0f} s", flush=True)
    if args.write:
        path = args.checkpoint / SETTINGS_FILENAME
        settings = {**json.loads(path.read_text()), **scores}
        path.write_text(json.dumps(settings, indent=2, sort_keys=True, ensure_ascii=False))


if __name__ == "__main__":
    main()
