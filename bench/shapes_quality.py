"""Prompt adherence of the offline default model, through the same workers the service uses.

    python -m bench.shapes_quality --seeds 4 --grid docs/shapes-grid.png

Scores every held-out scene (colour/shape/background combinations never seen in training)
with the shapes-world scorer, and optionally draws a captioned grid of generated images.
"""

from __future__ import annotations

import argparse
import io
import time

from PIL import Image, ImageDraw

from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
from deployments.contracts import GenerationParams
from training.shapes_world import Scene, adherence, held_out_scenes

TILE_PX = 128
CAPTION_PX = 28


def generate(encoder: TextEncoder, denoiser: Denoiser, scenes: list[Scene], seeds: int) -> list[list[Image.Image]]:
    """seeds images per scene, one request per scene (image i uses seed i)."""
    jobs = [
        encoder.job(
            GenerationParams.with_defaults(
                denoiser.defaults, scene.caption, width=64, height=64, seed=0, num_images=seeds, output_format="png"
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="emulated")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--grid", help="write a PNG grid of the first --grid-rows scenes here")
    parser.add_argument("--grid-rows", type=int, default=8)
    args = parser.parse_args()

    encoder = TextEncoder("flux-2-klein-4b", weights=args.weights)
    denoiser = Denoiser("flux-2-klein-4b", weights=args.weights)
    scenes = held_out_scenes()
    started = time.perf_counter()
    images = generate(encoder, denoiser, scenes, args.seeds)
    elapsed_s = time.perf_counter() - started
    scores = adherence(scenes, images)
    single_s = []
    for _ in range(5):
        one_started = time.perf_counter()
        generate(encoder, denoiser, scenes[:1], seeds=1)
        single_s.append(time.perf_counter() - one_started)
    print(f"{len(scenes)} held-out scenes x {args.seeds} seeds, {denoiser.weights.defaults.steps} steps, "
          f"guidance {denoiser.weights.defaults.guidance}: {elapsed_s / (len(scenes) * args.seeds):.3f} s per image (batched); "
          f"one 64x64 image alone ({denoiser.weights.defaults.steps} steps with CFG + decode, prompt embedding cached, median of 5): {sorted(single_s)[2]:.3f} s")
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
