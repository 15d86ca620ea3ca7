"""Prompt adherence of the offline default model, through the same workers the service uses.

    python -m bench.shapes_quality --seeds 4 --grid docs/shapes-grid.png

Scores every held-out scene (colour/shape/background combinations never seen in training)
with the shapes-world scorer, and optionally draws a captioned grid of generated images.
"""

from __future__ import annotations

import argparse
import io

from PIL import Image, ImageDraw

from bench.harness import bench_arguments, time_repeats
from bench.runners import load_workers
from deployments.contracts import GenerationParams
from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
from training.shapes_world import Scene, adherence, held_out_scenes

TILE_PX = 128
CAPTION_PX = 28


def generate(
    encoder: TextEncoder, denoiser: Denoiser, scenes: list[Scene], seeds: int, size: int = 64
) -> list[list[Image.Image]]:
    """seeds images per scene, one request per scene (image i uses seed i)."""
    jobs = [
        encoder.job(
            GenerationParams.with_defaults(
                denoiser.defaults, scene.caption, width=size, height=size, seed=0, num_images=seeds, output_format="png"
            )
        )
        for scene in scenes
    ]
    results = denoiser.generate(jobs)
    return [[Image.open(io.BytesIO(data)).convert("RGB") for data in result.images] for result in results]


def draw_grid(scenes: list[Scene], images: list[list[Image.Image]], columns: int = 4) -> Image.Image:
    """One row per scene: its caption, then its images."""
    rows = len(scenes)
    width = columns * TILE_PX
    grid = Image.new("RGB", (width, rows * (TILE_PX + CAPTION_PX)), "white")
    pen = ImageDraw.Draw(grid)
    for row, (scene, scene_images) in enumerate(zip(scenes, images)):
        top = row * (TILE_PX + CAPTION_PX)
        pen.text((4, top + 8), scene.caption, fill="black")
        for column, image in enumerate(scene_images[:columns]):
            grid.paste(image.resize((TILE_PX, TILE_PX), Image.NEAREST), (column * TILE_PX, top + CAPTION_PX))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[bench_arguments(weights="emulated", size=64, repeats=5)],
    )
    parser.add_argument("--seeds", type=int, default=4, help="images per scene")
    parser.add_argument("--grid", help="write a PNG grid of the first --grid-rows scenes here")
    parser.add_argument("--grid-rows", type=int, default=8)
    args = parser.parse_args()

    encoder, denoiser = load_workers(args.model, args.weights, args.device)
    scenes = held_out_scenes()
    scored = time_repeats(lambda: generate(encoder, denoiser, scenes, args.seeds, args.size), repeats=1, warmups=0)
    images = scored.result
    scores = adherence(scenes, images)
    alone = time_repeats(lambda: generate(encoder, denoiser, scenes[:1], 1, args.size), args.repeats, warmups=0)
    steps, guidance = denoiser.defaults.steps, denoiser.defaults.guidance
    print(
        f"{len(scenes)} held-out scenes x {args.seeds} seeds, {steps} steps, guidance {guidance}: "
        f"{scored.best_s / (len(scenes) * args.seeds):.3f} s per image (batched); one {args.size}x{args.size} image "
        f"alone ({steps} steps with CFG + decode, prompt embedding cached, median of {args.repeats}): "
        f"{alone.median_s:.3f} s"
    )
    print("| shape colour | background | shape | all three |")
    print("|---|---|---|---|")
    print(f"| {scores['colour']:.3f} | {scores['background']:.3f} | {scores['shape']:.3f} | {scores['all']:.3f} |")
    if args.grid:
        step = max(1, len(scenes) // args.grid_rows)
        chosen = list(range(0, len(scenes), step))[: args.grid_rows]
        draw_grid([scenes[i] for i in chosen], [images[i] for i in chosen]).save(args.grid)
        print(f"grid: {args.grid}")


if __name__ == "__main__":
    main()
